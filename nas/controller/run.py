"""Run one study: the single code path behind ``nas search`` and the service's runner.

Prepare the data once, start (or join) Ray, hand the space to a Ray Tune ``Tuner`` whose search algorithm is
the Optuna ask/tell adapter over ``RDBStorage`` on the project's database, and keep the study row's status
in step: running -> succeeded / failed / interrupted.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.catalog import TASKS
from nas.controller.cluster import check_trial_fits, ensure_ray
from nas.controller.stopping import StopFlag
from nas.errors import UserError, failure_message, first_line
from nas.settings import database_url
from nas.store.artifacts import shared_copy, tune_storage
from nas.store.db import optuna_storage
from nas.store.outage import DatabaseUnavailable, call_with_retry, is_outage
from nas.store.trials import FAIL_REASON, INFEASIBLE, LOST, count_trials, finished, why_not_complete

if TYPE_CHECKING:
    from nas.data.prepare import PreparedData
    from nas.space.spec import Candidate, SearchSpace

log = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    name: str
    status: str
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    report: dict[str, Any] | None = None  # an audit's rank agreement (nas.audit)


def default_study_name(space: SearchSpace) -> str:
    from datetime import datetime, timezone

    return f"{space.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


class InvalidStudyName(UserError, ValueError):
    pass


def check_study_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}", name):
        raise InvalidStudyName(
            f"study name {name!r} must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def run_study(
    space: SearchSpace,
    study_name: str | None = None,
    storage_url: str | None = None,
    progress: bool = True,
    create_row: bool = True,
    stop_event: StopFlag | None = None,
    fixed_candidates: list[tuple[Candidate, dict[str, Any]]] | None = None,
    before_final_status: Callable[[StudyOutcome], None] | None = None,
) -> StudyOutcome:
    """Run ``space`` to its trial budget as study ``study_name``; returns its final status and counts.

    With ``create_row=False`` the study row exists already (a runner claimed it) and the study resumes:
    trials a dead runner left RUNNING are marked failed, finished trials are kept, and only the rest of the
    budget runs. Setting ``stop_event`` stops the running trials within seconds (status ``cancelled``).
    ``fixed_candidates`` (candidate, extra user attrs) are trained in order instead of sampled (an audit);
    ``before_final_status`` sees the outcome before the study row says it has ended. A new study brings the
    schema up to date first (the start-up of `nas search`; a runner did so when it started).
    """
    from nas.store.db import upgrade
    from nas.store.studies import create_study_row, set_status

    url = database_url(storage_url)
    name = check_study_name(study_name or default_study_name(space))
    stop_event = stop_event or StopFlag()
    if create_row:
        upgrade(url)
        _check_warm_start(url, space, name)  # a refused warm start leaves no study row behind
        data = prepare_space_data(space)  # nor does data that cannot be used (empty, too small, unreadable)
        create_study_row(url, name, space, status="running")
    else:
        call_with_retry(lambda: set_status(url, name, "running"), "marking the study running")
    try:
        if not create_row:
            _check_warm_start(url, space, name)  # a queued study's sources may have changed since it was submitted
            data = prepare_space_data(space)
        outcome = _run(space, name, url, progress, stop_event, fixed_candidates, data)
        if before_final_status is not None:
            before_final_status(outcome)
    except KeyboardInterrupt:
        if not stop_event.claim_lost:
            _fail_running_trials(url, name, "interrupted before it finished")
            set_status(url, name, "interrupted", "stopped by the user (Ctrl-C)")
        raise
    except Exception as exc:
        if stop_event.claim_lost:  # another runner resumed the study; what this one saw last is not the record
            log.warning("study %s: taken over by another runner while it failed here: %s", name, first_line(exc))
            return StudyOutcome(name, "running", {}, "taken over by another runner")
        if is_outage(exc):
            raise _after_outage(url, name, exc, requeue=not create_row) from exc
        _fail_running_trials(url, name, f"study failed: {first_line(exc)}")
        set_status(url, name, "failed", failure_message(exc, log, f"study {name} failed"))
        raise
    if stop_event.claim_lost:
        log.warning("study %s: taken over by another runner; leaving its status to that runner", name)
        return StudyOutcome(name, "running", outcome.counts, "taken over by another runner")
    call_with_retry(lambda: set_status(url, name, outcome.status, outcome.error), "recording the study's end")
    return outcome


def prepare_space_data(space: SearchSpace) -> PreparedData:
    """The space's data, tokenised or resized once and cached (``nas.data.prepare``); DataError when unusable."""
    from nas.data.prepare import prepare_data

    data = prepare_data(space.data, TASKS.get(space.task).data_kind, space.data_shape.channels, seed=space.search.seed)
    log.info("data %s (%s)", data.fingerprint, "cached" if data.cache_hit else "prepared")
    return data


def _after_outage(url: str, name: str, error: Exception, requeue: bool) -> DatabaseUnavailable:
    """The database stayed out longer than the retries wait: once it answers again (one more retry budget), mark
    the trials that were running lost (they do not use the budget) and hand the study back: ``queued`` for a runner
    to resume it, ``interrupted`` for the CLI. If it is still out, the next claim does the same (its lease expires,
    and a resumed run starts by marking RUNNING trials lost). Returns the error to raise."""
    from nas.store.studies import set_status

    status, what = ("queued", "queued to resume") if requeue else ("interrupted", "interrupted")
    message = f"the database was unreachable during the study; {what} with its finished trials kept"
    try:
        call_with_retry(lambda: _fail_running_trials(url, name, "the database was unreachable"), "marking trials lost")
        call_with_retry(lambda: set_status(url, name, status, message), f"marking the study {status}")
    except DatabaseUnavailable as still_out:
        log.warning("study %s: %s; it stays claimed until its lease expires", name, still_out)
    return error if isinstance(error, DatabaseUnavailable) else DatabaseUnavailable(f"{message}: {first_line(error)}")


def _run(
    space: SearchSpace,
    name: str,
    url: str,
    progress: bool,
    stop_event: StopFlag,
    fixed_candidates: list[tuple[Candidate, dict[str, Any]]] | None,
    data: PreparedData,
) -> StudyOutcome:
    from ray import tune

    from nas.controller.progress import ProgressBar, TrialTracker
    from nas.controller.samplers import create_sampler, create_scheduler
    from nas.controller.searcher import CandidateSearcher
    from nas.controller.trainable import train_candidate
    from nas.controller.warm_start import DATA_FINGERPRINT, seed_study

    # Optuna's tables are the record of every trial; Tune's own CSV/JSON/TensorBoard files would only repeat them.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # "no result.json": by design
    if stop_event.is_set():
        return StudyOutcome(name, "cancelled", {}, "cancelled before any trial started")
    ensure_ray()
    check_trial_fits(space.resources.cpu, space.resources.gpu)

    _fail_running_trials(url, name, "its runner stopped before the trial finished")
    storage = optuna_storage(url)
    sampler = create_sampler(space.search.sampler, space.search.seed, space.multi_objective)
    ray_trials: dict[str, Any] = {}
    searcher = CandidateSearcher(space, storage, name, sampler, ray_trials, stop_event, fixed_candidates, data)
    study = searcher.study
    for key, value in {
        "space": space.to_yaml(),
        "family": space.family,
        "task": space.task,
        "objectives": list(space.objectives),
        DATA_FINGERPRINT: data.fingerprint,
        # Export on any machine (the API's, a laptop's) needs it: a copy in the shared storage when there is one.
        "tokenizer_dir": data.tokenizer_dir
        and shared_copy(Path(data.tokenizer_dir), "tokenizers", Path(data.tokenizer_dir).name),
    }.items():
        study.set_user_attr(key, value)
    if space.search.warm_start:  # checked by run_study against the earlier studies
        seed_study(study, storage, space, data.fingerprint)

    finished_before = finished(count_trials(study.get_trials(deepcopy=False)))
    # A fixed list (an audit) already leaves out what finished; lost trials it re-runs still count as failed.
    remaining = len(fixed_candidates) if fixed_candidates is not None else space.search.trials - finished_before
    if remaining <= 0:
        return _final_outcome(name, study, space, searcher, stop_event)

    scheduler = create_scheduler(
        space.search.scheduler, space.evals_per_trial, space.search.grace_period, space.search.reduction_factor
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_candidate, space=space, data=data),
        {"cpu": space.resources.cpu, "gpu": space.resources.gpu},
    )
    bar = ProgressBar(searcher, remaining, already_finished=finished_before, enabled=progress)
    # A fresh Tune experiment per attempt: the Optuna study, not Tune's folder, is what a resume continues.
    experiment = name if not finished_before else f"{name}-resume-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_path, storage_filesystem = tune_storage()  # NAS_STORAGE_URI: checkpoints where every node can reach
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=remaining,
            max_concurrent_trials=space.search.concurrency,
            # The scheduler stops trials by the first objective (a loss; the space checks).
            metric=space.objectives[0],
            mode="min" if space.directions[0] == "minimize" else "max",
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            verbose=0,
            stop=stopper_for(stop_event),
            failure_config=tune.FailureConfig(max_failures=space.search.max_failures),
            callbacks=[TrialTracker(ray_trials), bar],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    try:
        tuner.fit()
    finally:
        bar.close()
        searcher.release_screened()
    reason = "cancelled" if stop_event.is_set() else "interrupted before it finished"
    if not stop_event.claim_lost:  # else the trials still RUNNING are the new runner's
        _fail_running_trials(url, name, reason)
    return _final_outcome(name, study, space, searcher, stop_event)


def _final_outcome(name: str, study, space: SearchSpace, searcher, stop_event: StopFlag) -> StudyOutcome:
    counts = count_trials(study.get_trials(deepcopy=False))
    done = finished(counts)
    if searcher.exhausted_reason and counts["complete"] == 0:
        return StudyOutcome(name, "failed", counts, searcher.exhausted_reason)
    if stop_event.is_set():
        return StudyOutcome(name, "cancelled", counts, f"cancelled after {done} of {space.search.trials} trials")
    if searcher.fixed:
        return StudyOutcome(name, "interrupted", counts, f"{len(searcher.fixed)} planned trials did not start")
    if done < space.search.trials and not searcher.exhausted_reason:
        return StudyOutcome(name, "interrupted", counts, f"{done} of {space.search.trials} trials finished")
    if counts["complete"] == 0:
        trained = [t for t in study.get_trials(deepcopy=False) if INFEASIBLE not in t.user_attrs]
        reasons = {why_not_complete(t.user_attrs) for t in trained} - {""}
        return StudyOutcome(
            name, "failed", counts, "no trial completed" + (f": {sorted(reasons)[0]}" if reasons else "")
        )
    return StudyOutcome(name, "succeeded", counts, searcher.exhausted_reason)


def _check_warm_start(url: str, space: SearchSpace, name: str) -> None:
    """The studies ``search.warm_start`` names exist and searched the same space (SpaceError otherwise)."""
    if space.search.warm_start:
        from nas.store.db import session_scope
        from nas.store.studies import check_warm_start as check

        with session_scope(url) as session:
            check(session, space, name)


def trial_name(trial) -> str:
    """``trial_00007``: Optuna's trial number, so Tune's folders line up with the database."""
    return f"trial_{trial.config.get('trial_number', 0):05d}_{trial.trial_id}"


def stopper_for(event: StopFlag):
    """A Tune stopper that ends the whole experiment once ``event`` is set (a cancel from the API)."""
    from ray import tune

    class _Stopper(tune.Stopper):
        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            return event.is_set()

    return _Stopper()


def _fail_running_trials(url: str, name: str, reason: str) -> int:
    """Mark trials still RUNNING in Optuna as FAIL (a run that stopped leaves none RUNNING). Returns how many."""
    from optuna.trial import TrialState

    try:
        storage = optuna_storage(url)
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    count = 0
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
        storage.set_trial_user_attr(trial._trial_id, LOST, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        count += 1
    return count
