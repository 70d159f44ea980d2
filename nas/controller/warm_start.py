"""Seed a study with the finished trials of earlier studies of the same space (``search.warm_start``).

Each earlier trial that trained to the end is copied into the new study as a COMPLETE trial with the same
parameters, values and figures, marked ``warm_start_of`` (the ``study#number`` that trained it): the sampler starts
from what is known, a sample equal to a copied one is reused as a duplicate, and nothing is trained again. The
copies use no budget. The new study's constraints are applied again: a copied trial they reject is left out.
Copying is idempotent (a resumed study skips what it copied already), and a candidate is copied once even when
several sources hold it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.space.spec import Candidate, SearchSpace, SpaceError, measured_figures
from nas.store.trials import ARCHITECTURE, CANDIDATE_KEY, DUPLICATE_OF, RAY_TRIAL_ID, WARM_START_OF

log = logging.getLogger(__name__)

DATA_FINGERPRINT = "data_fingerprint"  # the study user attr of the prepared data's hash (nas.controller.run)


@dataclass
class WarmStartReport:
    copied: int = 0
    already_copied: int = 0  # by an earlier attempt of this study, or held by another source as well
    rejected: int = 0  # broke a constraint of the new space


def seed_study(
    study: optuna.Study, storage: optuna.storages.BaseStorage, space: SearchSpace, data_fingerprint: str
) -> WarmStartReport:
    """Copy the finished trials of every study in ``space.search.warm_start`` into ``study`` (whose space the
    caller has checked against theirs, ``nas.store.studies.check_warm_start``). Their data must have been the
    same too: a folder that changed since is refused by its fingerprint."""
    report = WarmStartReport()
    present = study.get_trials(deepcopy=False)
    copied = {t.user_attrs[WARM_START_OF] for t in present if WARM_START_OF in t.user_attrs}
    known_keys = {t.user_attrs.get(CANDIDATE_KEY) for t in present if t.state == TrialState.COMPLETE}
    for index, name in enumerate(space.search.warm_start):
        try:
            earlier = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue  # the study row exists but no trial of it ever started: nothing to copy
        fingerprint = earlier.user_attrs.get(DATA_FINGERPRINT)
        if fingerprint not in (None, data_fingerprint):
            raise SpaceError(
                [(f"search.warm_start[{index}]", f"study {name!r} trained on different data (the source changed)")],
                "search.warm_start",
            )
        for trial in earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            if DUPLICATE_OF in attrs or ARCHITECTURE not in attrs:
                continue  # a duplicate repeats another trial here; a record without a candidate cannot be rebuilt
            origin = attrs.get(WARM_START_OF) or f"{name}#{trial.number}"  # the trial that trained it
            candidate = Candidate.from_json(attrs)
            key = attrs.get(CANDIDATE_KEY) or candidate.key
            if origin in copied or key in known_keys:
                report.already_copied += 1
                continue
            measured = measured_figures(attrs)
            if space.feasibility(candidate) or space.measured_problems(candidate, measured):
                report.rejected += 1
                continue
            study.add_trial(_copy(trial, space, candidate, measured, origin, key))
            copied.add(origin)
            known_keys.add(key)
            report.copied += 1
    log.info(
        "warm start: %d trials copied, %d held already, %d rejected by this space's constraints",
        report.copied,
        report.already_copied,
        report.rejected,
    )
    return report


def _copy(
    trial: optuna.trial.FrozenTrial,
    space: SearchSpace,
    candidate: Candidate,
    measured: dict[str, float],
    origin: str,
    key: str,
) -> optuna.trial.FrozenTrial:
    user_attrs: dict[str, Any] = {k: v for k, v in trial.user_attrs.items() if k != RAY_TRIAL_ID}
    user_attrs.update({CANDIDATE_KEY: key, WARM_START_OF: origin})
    constraint_values = space.constraint_values(candidate, measured)
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=trial.values,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=user_attrs,
        intermediate_values=trial.intermediate_values,
        constraints={c.expression.text: v for c, v in zip(space.constraints, constraint_values)},
    )
