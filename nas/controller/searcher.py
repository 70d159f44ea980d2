"""The ask/tell adapter between Ray Tune and an Optuna study (a thin subclass of Ray's ``OptunaSearch``).

It owns no training code. It asks Optuna for a candidate (define-by-run over the space), rejects infeasible
ones before Ray sees them (telling Optuna they were pruned, so the sampler learns to avoid them), stores the
architecture on the trial, and maps the end of each Ray trial to COMPLETE, PRUNED (stopped early by the
scheduler) or FAIL (an error, with its reason).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, cast

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from nas.controller.stopping import StopFlag
from nas.space.spec import Candidate, SearchSpace
from nas.store.trials import FAIL_REASON, INFEASIBLE, LOST, PARAMS, RAY_TRIAL_ID, STORED_METRICS, WEIGHTS_PATH


def error_reason(text: str | None, limit: int = 500) -> str:
    """The last meaningful line of a traceback (``TrialFailure: training loss became nan at step 3``)."""
    if not text:
        return "the trial's worker failed without an error message (see Ray's logs)"
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else str(text))[:limit]


def error_text(ray_trial: Any) -> str | None:
    """The error Ray wrote for a trial: the local error file (written before the searcher hears of the
    failure), else the copy in the experiment's storage."""
    if ray_trial is None:
        return None
    path = getattr(ray_trial, "error_file", None)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    return ray_trial.get_error()


class CandidateSearcher(OptunaSearch):
    def __init__(
        self,
        space: SearchSpace,
        storage: optuna.storages.BaseStorage,
        study_name: str,
        sampler: optuna.samplers.BaseSampler,
        ray_trials: dict[str, Any],
        stop_event: StopFlag | None = None,
        fixed_candidates: list[tuple[Candidate, dict[str, Any]]] | None = None,
    ):
        self.space = space
        # Candidates to train in order instead of sampling (an audit), each with extra user attrs to store.
        self.fixed = list(fixed_candidates) if fixed_candidates is not None else None
        self.stop_event = stop_event or StopFlag()  # set when the study is cancelled
        self.ray_trials = ray_trials  # trial_id -> ray Trial, filled by TrialTracker (for error texts)
        self.exhausted_reason: str | None = None
        objectives = list(space.objectives)
        modes = ["min" if d == "minimize" else "max" for d in space.directions]
        multi = len(objectives) > 1
        super().__init__(
            space=self._never_called,
            metric=objectives if multi else objectives[0],
            mode=modes if multi else modes[0],
            sampler=sampler,
            study_name=study_name,
            storage=storage,
        )

    @staticmethod
    def _never_called(trial):  # pragma: no cover - suggest() below samples the space itself
        raise AssertionError("CandidateSearcher samples the space in suggest()")

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna study in the database is the record a resumed run starts from."""

    def restore(self, checkpoint_path: str) -> None:
        """See ``save``: state comes back from the database, not from Ray's experiment folder."""

    @property
    def study(self) -> optuna.Study:
        # Ray types _ot_study as None; OptunaSearch.__init__ creates the study because a space is always given.
        return cast(optuna.Study, self._ot_study)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]  # Ray's stub omits FINISHED
        if self.fixed is not None:
            if not self.fixed:
                return Searcher.FINISHED
            candidate, attrs = self.fixed.pop(0)
            return self._start(trial_id, self.study.ask(), candidate, attrs)
        for _ in range(self.space.search.max_infeasible):
            ot_trial = self.study.ask()
            candidate = self.space.suggest(ot_trial)
            problems = self.space.feasibility(candidate)
            if problems:
                ot_trial.set_user_attr(INFEASIBLE, "; ".join(f"{path}: {message}" for path, message in problems))
                ot_trial.set_user_attr(PARAMS, candidate.params.total)
                self.study.tell(ot_trial, state=TrialState.PRUNED)
                continue
            return self._start(trial_id, ot_trial, candidate)
        self.exhausted_reason = (
            f"the sampler proposed {self.space.search.max_infeasible} infeasible candidates "
            "in a row; loosen the constraints or raise search.max_infeasible"
        )
        return Searcher.FINISHED

    def _start(
        self, trial_id: str, ot_trial: optuna.Trial, candidate: Candidate, attrs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record the candidate on its Optuna trial and hand its config to Ray."""
        for key, value in {**candidate.to_json(), **(attrs or {}), RAY_TRIAL_ID: trial_id}.items():
            ot_trial.set_user_attr(key, value)
        self._ot_trials[trial_id] = ot_trial
        return {"trial_number": ot_trial.number, "candidate": candidate.to_json()}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.space.objectives[0])
        if isinstance(value, float) and math.isfinite(value):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        for key in STORED_METRICS:
            if result and key in result:
                ot_trial.set_user_attr(key, result[key])
        if not error:
            self._report_last(ot_trial, result or {})
        if error:
            ray_trial = self.ray_trials.get(trial_id)
            ot_trial.set_user_attr(FAIL_REASON, error_reason(error_text(ray_trial)))
            self._tell(ot_trial, TrialState.FAIL)
        elif result and result.get("completed"):
            values = [result.get(name) for name in self.space.objectives]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                checkpoint = getattr(self.ray_trials.get(trial_id), "checkpoint", None)
                if checkpoint is not None:
                    ot_trial.set_user_attr(WEIGHTS_PATH, checkpoint.path)
                self._tell(ot_trial, TrialState.COMPLETE, cast(list[float], values))  # all checked finite numbers
            else:
                ot_trial.set_user_attr(FAIL_REASON, f"objective values not finite: {values}")
                self._tell(ot_trial, TrialState.FAIL)
        elif self.stop_event.is_set():
            ot_trial.set_user_attr(FAIL_REASON, "cancelled")
            ot_trial.set_user_attr(LOST, True)
            self._tell(ot_trial, TrialState.FAIL)
        else:
            self._tell(ot_trial, TrialState.PRUNED)  # stopped before its last step: the scheduler's decision
        self._completed_trials.add(trial_id)

    def _report_last(self, ot_trial: optuna.Trial, result: dict[str, Any]) -> None:
        """Ray hands a trial's last result (the one a scheduler stopped it on, or its final one) to
        on_trial_complete only, so record it as the last intermediate value here."""
        value, step = result.get(self.space.objectives[0]), result.get("training_iteration")
        if not self.space.multi_objective and isinstance(value, float) and math.isfinite(value) and step:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a step reported already is ignored by Optuna with a warning
                ot_trial.report(value, step)

    def _tell(self, ot_trial: optuna.Trial, state: TrialState, values: list[float] | None = None) -> None:
        if state == TrialState.COMPLETE:
            assert values is not None  # a COMPLETE trial is always told with its objective values
            self.study.tell(ot_trial, values if len(values) > 1 else values[0], state=state)
        else:
            self.study.tell(ot_trial, state=state)
