"""The ask/tell adapter between Ray Tune and an Optuna study (a thin subclass of Ray's ``OptunaSearch``).

It owns no training code. It asks Optuna for a candidate (define-by-run over the space), rejects infeasible
ones before Ray sees them (telling Optuna they were pruned, so the sampler learns to avoid them), tells a sample
the study has already trained to the end with that result (marked ``duplicate_of``, no Ray trial), under
``search.prescreen`` trains only the best-scoring fraction of each pool of samples (the rest marked
``prescreened``), stores the
architecture on the trial, and maps the end of each Ray trial to COMPLETE, PRUNED (stopped early by the
scheduler) or FAIL (an error, with its reason).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from nas.controller.stopping import StopFlag
from nas.space.sections import PrescreenSpec
from nas.space.spec import Candidate, SearchSpace, measured_figures
from nas.store.artifacts import checkpoint_location
from nas.store.trials import (
    CANDIDATE_KEY,
    DUPLICATE_OF,
    FAIL_REASON,
    FLOPS,
    INFEASIBLE,
    LOST,
    PARAMS,
    PRESCREENED,
    RAY_TRIAL_ID,
    RESTARTS,
    SCALAR_METRICS,
    STORED_METRICS,
    WEIGHTS_PATH,
)

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class TrainedResult:
    """What a duplicate sample reuses of the trial that trained it: its number, values and figures."""

    number: int
    values: tuple[float, ...]
    figures: dict[str, Any]  # the scalar metrics and the weights' path

    @classmethod
    def of(cls, number: int, values: list[float], attrs: dict[str, Any]) -> TrainedResult:
        """From a trial's number, values and stored figures (a finished trial's user attrs, or the last result
        and checkpoint of one that just finished)."""
        keep = (*SCALAR_METRICS, WEIGHTS_PATH)
        return cls(number, tuple(values), {k: v for k, v in attrs.items() if k in keep})


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
        data: Any = None,
    ):
        self.space = space
        # Candidates to train in order instead of sampling (an audit), each with extra user attrs to store.
        self.fixed = list(fixed_candidates) if fixed_candidates is not None else None
        self.stop_event = stop_event or StopFlag()  # set when the study is cancelled
        self.ray_trials = ray_trials  # trial_id -> ray Trial, filled by TrialTracker (for error texts)
        self.exhausted_reason: str | None = None
        self._candidates: dict[str, Candidate] = {}  # trial_id -> what it trains (constraint values, its key)
        self._trained: dict[str, TrainedResult] | None = None  # see _trained_by_key
        self.data = data  # the prepared data, on the driver: what pre-screening scores candidates on
        # Kept by the pre-screen, best first, not yet started: (trial, candidate, its zero-cost scores).
        self._screened: list[tuple[optuna.Trial, Candidate, dict[str, float]]] = []
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

    # Tune pickles its search algorithm into the experiment folder when the Tuner is made, for a restore this
    # project never does (the study in the database is the record a resumed run starts from). What cannot or
    # need not travel stays out: the sampler and study (Optuna's GA samplers hold a lock since 5.1), the data
    # (tensors), the screened trials. A searcher unpickled from this state is not meant to run.
    _NOT_PICKLED = ("_sampler", "_ot_study", "_ot_trials", "data", "_screened")

    def __getstate__(self) -> dict[str, Any]:
        return {k: (None if k in self._NOT_PICKLED else v) for k, v in self.__dict__.items()}

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
        if self.space.search.prescreen is not None:
            if not self._screened:
                self._screen()
            if self._screened:
                ot_trial, candidate, _ = self._screened.pop(0)
                return self._start(trial_id, ot_trial, candidate)
            return Searcher.FINISHED
        fresh = self._next_fresh()
        if fresh is None:
            return Searcher.FINISHED
        return self._start(trial_id, *fresh)

    def _next_fresh(self) -> tuple[optuna.Trial, Candidate] | None:
        """The sampler's next feasible sample the study has not trained yet. Infeasible samples are told PRUNED and
        known ones their earlier result on the way; None (with ``exhausted_reason``) after too many in a row."""
        for _ in range(self.space.search.max_infeasible):
            ot_trial = self.study.ask()
            candidate = self.space.suggest(ot_trial)
            problems = self.space.feasibility(candidate)
            if problems:
                ot_trial.set_user_attr(INFEASIBLE, "; ".join(f"{path}: {message}" for path, message in problems))
                ot_trial.set_user_attr(PARAMS, candidate.params.total)
                ot_trial.set_user_attr(FLOPS, candidate.flops)
                self._set_constraints(ot_trial, candidate, {})
                self.study.tell(ot_trial, state=TrialState.PRUNED)
                continue
            original = self._trained_by_key().get(candidate.key)
            if original is not None:
                self._reuse(ot_trial, candidate, original)
                continue
            return ot_trial, candidate
        self.exhausted_reason = (
            f"the sampler proposed {self.space.search.max_infeasible} infeasible or already-trained candidates "
            "in a row; loosen the constraints, widen the space or raise search.max_infeasible"
        )
        return None

    def _screen(self) -> None:
        """Draw a pool of fresh samples, score each at initialisation, queue the best ``keep`` fraction to train
        and tell the rest PRUNED, marked ``prescreened`` with their score (no budget used, no Ray trial)."""
        from nas.proxies.loop import scores_at_init

        spec = cast(PrescreenSpec, self.space.search.prescreen)
        pool: list[tuple[optuna.Trial, Candidate]] = []
        while len(pool) < spec.pool and (fresh := self._next_fresh()) is not None:
            pool.append(fresh)
        if not pool:
            return
        scored = []
        for ot_trial, candidate in pool:
            scores = scores_at_init(self.space, candidate, self.data, seed=self.space.search.seed)
            scored.append((scores[spec.score], ot_trial, candidate, scores))
        scored.sort(key=lambda item: -item[0])  # a higher zero-cost score is more promising
        kept = max(1, math.ceil(spec.keep * len(scored)))
        for rank, (score, ot_trial, candidate, scores) in enumerate(scored):
            if rank < kept:
                self._screened.append((ot_trial, candidate, scores))
                continue
            self._tell_screened_out(
                ot_trial, candidate, scores, f"{spec.score} {score:.4g}, rank {rank + 1} of {len(scored)}"
            )

    def _tell_screened_out(
        self, ot_trial: optuna.Trial, candidate: Candidate, scores: dict[str, float], why: str
    ) -> None:
        self._record(ot_trial, candidate, {**scores, PRESCREENED: why})
        self._set_constraints(ot_trial, candidate, {})
        self._tell(ot_trial, TrialState.PRUNED)

    def release_screened(self) -> None:
        """Samples screened in but not reached before the run ended: told PRUNED, marked like the screened-out
        ones, so that none stays RUNNING (a resumed study screens a fresh pool)."""
        while self._screened:
            ot_trial, candidate, scores = self._screened.pop(0)
            self._tell_screened_out(ot_trial, candidate, scores, "screened in, not trained before the run ended")

    def _start(
        self, trial_id: str, ot_trial: optuna.Trial, candidate: Candidate, attrs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record the candidate on its Optuna trial and hand its config to Ray."""
        self._record(ot_trial, candidate, {**(attrs or {}), RAY_TRIAL_ID: trial_id})
        self._ot_trials[trial_id] = ot_trial
        self._candidates[trial_id] = candidate
        return {"trial_number": ot_trial.number, "candidate": candidate.to_json()}

    @staticmethod
    def _record(ot_trial: optuna.Trial, candidate: Candidate, extra: dict[str, Any]) -> None:
        """The candidate's record and key on its Optuna trial, with ``extra`` user attrs."""
        for key, value in {**candidate.to_json(), CANDIDATE_KEY: candidate.key, **extra}.items():
            ot_trial.set_user_attr(key, value)

    def _trained_by_key(self) -> dict[str, TrainedResult]:
        """The study's trials trained to the end, by candidate key: read from the database once (a resumed study
        reuses what earlier runs trained), then kept up to date as trials complete."""
        if self._trained is None:
            self._trained = {}
            for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if CANDIDATE_KEY in trial.user_attrs and DUPLICATE_OF not in trial.user_attrs:
                    trained = TrainedResult.of(trial.number, trial.values, trial.user_attrs)
                    self._trained.setdefault(trial.user_attrs[CANDIDATE_KEY], trained)
        return self._trained

    def _reuse(self, ot_trial: optuna.Trial, candidate: Candidate, original: TrainedResult) -> None:
        """Tell a sample the study has trained already with the earlier result, marked, without a Ray trial."""
        self._record(ot_trial, candidate, {**original.figures, DUPLICATE_OF: original.number})
        self._set_constraints(ot_trial, candidate, measured_figures(original.figures))
        self._tell(ot_trial, TrialState.COMPLETE, list(original.values))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        value = result.get(self.space.objectives[0])
        if isinstance(value, float) and math.isfinite(value):
            with self._unless_taken_over(trial_id):
                super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        with self._unless_taken_over(trial_id):
            self._complete(trial_id, self._ot_trials[trial_id], result, error)
        self._completed_trials.add(trial_id)

    @contextmanager
    def _unless_taken_over(self, trial_id: str) -> Iterator[None]:
        """Drop what a trial reports once another runner has marked it lost: this runner's lease expired (a database
        outage, a paused process), the study was claimed and resumed elsewhere, and this runner stops at its next
        heartbeat. Any other write to a finished trial is still an error."""
        try:
            yield
        except UpdateFinishedTrialError:
            ot_trial = self._ot_trials[trial_id]
            stored = self.study._storage.get_trial(ot_trial._trial_id)
            if not stored.user_attrs.get(LOST):
                raise
            log.warning(
                "trial %s was marked lost by a runner that resumed the study; its result is dropped", ot_trial.number
            )
            self._completed_trials.add(trial_id)

    def _complete(self, trial_id: str, ot_trial: optuna.Trial, result: dict[str, Any] | None, error: bool) -> None:
        for key in STORED_METRICS:
            value = (result or {}).get(key)
            if value is not None and not (isinstance(value, float) and not math.isfinite(value)):
                ot_trial.set_user_attr(key, value)  # not the worst-value stand-ins of a trial that never trained
        if restarts := getattr(self.ray_trials.get(trial_id), "num_failures", 0):
            ot_trial.set_user_attr(RESTARTS, restarts)  # started again from scratch after a failure (max_failures)
        if result and trial_id in self._candidates:
            self._set_constraints(ot_trial, self._candidates[trial_id], measured_figures(result))
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
                weights = {WEIGHTS_PATH: checkpoint_location(checkpoint)} if checkpoint is not None else {}
                for key, location in weights.items():  # a path, or a URI in an object store (NAS_STORAGE_URI)
                    ot_trial.set_user_attr(key, location)
                self._tell(ot_trial, TrialState.COMPLETE, cast(list[float], values))  # all checked finite numbers
                if trial_id in self._candidates:
                    figures = {**result, **weights}
                    trained = TrainedResult.of(ot_trial.number, cast(list[float], values), figures)
                    self._trained_by_key().setdefault(self._candidates[trial_id].key, trained)
            else:
                ot_trial.set_user_attr(FAIL_REASON, f"objective values not finite: {values}")
                self._tell(ot_trial, TrialState.FAIL)
        elif self.stop_event.is_set():
            ot_trial.set_user_attr(FAIL_REASON, "cancelled")
            ot_trial.set_user_attr(LOST, True)
            self._tell(ot_trial, TrialState.FAIL)
        else:
            self._tell(ot_trial, TrialState.PRUNED)  # stopped before its last step: the scheduler's decision

    def _set_constraints(self, ot_trial: optuna.Trial, candidate: Candidate, measured: dict[str, float]) -> None:
        """Each constraint's value (<= 0 when met) on the trial, where TPE, GP and NSGA-II read them to learn the
        feasible region (Optuna 5's ``Trial.set_constraint``, which replaced samplers' ``constraints_func``)."""
        for constraint, value in zip(self.space.constraints, self.space.constraint_values(candidate, measured)):
            ot_trial.set_constraint(constraint.expression.text, value)

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
