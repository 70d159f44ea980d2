"""What a trial record is: the user-attribute keys a trial carries in Optuna's tables, its marks, the metric names,
how trials are counted and which are best, and the statuses a study and a trial can have.

The searcher writes trials with these names; the CLI, the progress bar, the REST API, audits and exports read
them with the same ones. A new key or rule is added here, once. Light on purpose (no optuna import): the CLI
reads these names on paths that must start fast. States are compared by their names (``TrialState.name``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

# --- keys --------------------------------------------------------------------------------------------------

ARCHITECTURE = "architecture"  # the sampled architecture (nas.space.spec.Candidate.to_json), set when proposed
HYPERPARAMETERS = "hyperparameters"
FAMILY = "family"  # with DATA_SHAPE, what the model is built from without the space (Candidate.build)
DATA_SHAPE = "data_shape"
PARAMS = "params"
NON_EMBEDDING_PARAMS = "non_embedding_params"
FLOPS = "flops"  # forward FLOPs per sample, counted analytically (nas.models.base.ModelFamily.count_flops)
RAY_TRIAL_ID = "ray_trial_id"
WEIGHTS_PATH = "weights_path"  # the proxy's final checkpoint, set on COMPLETE
FAIL_REASON = "fail_reason"  # one line: why a FAIL trial failed
PARENT_TRIAL = "parent_trial"  # on an audit's trials: the number of the audited trial
# A trial that measured a figure past a hard limit (``latency_ms <= 5``) and stopped before training: told PRUNED,
# it used up a place in the budget (a worker built the model). Samples rejected before launch are ``infeasible``.
CONSTRAINT_VIOLATION = "constraint_violation"
# Where a trained trial ran (nas.controller.trainable.placement): the Ray node, the GPUs Ray gave it, torch's device.
NODE_ID = "node_id"
CUDA_VISIBLE_DEVICES = "cuda_visible_devices"
DEVICE = "device"
RESTARTS = "restarts"  # how often Tune started the trial again after its worker or node died (search.max_failures)

# The canonical hash of what a trial trains (nas.space.spec.Candidate.key): equal samples, equal keys.
CANDIDATE_KEY = "candidate_key"

# Marks. ``infeasible``: a sample the constraints rejected, told PRUNED before Ray saw it. ``lost``: a trial cut
# short by a cancel, a Ctrl-C or a dead runner, told FAIL; it does not use up the budget, so a resumed study runs
# it again. ``duplicate_of``: a sample the study had already trained to the end (its value is that trial's
# number), told COMPLETE with the earlier result and no Ray trial; it uses no budget and is never among the best.
# ``prescreened``: a sample ``search.prescreen`` scored at initialisation and did not train (its value says why),
# told PRUNED; no budget used. ``warm_start_of``: a finished trial copied from an earlier study of the same space by
# ``search.warm_start`` (its value names the trial that trained, ``study#number``), told COMPLETE with that
# trial's values; no budget used, and it may be among the best. Each mark goes with one state only; migration
# 0006's partial index holds exactly these keys.
INFEASIBLE = "infeasible"
LOST = "lost"
DUPLICATE_OF = "duplicate_of"
PRESCREENED = "prescreened"
WARM_START_OF = "warm_start_of"
MARK_STATES = {
    INFEASIBLE: "PRUNED",
    LOST: "FAIL",
    DUPLICATE_OF: "COMPLETE",
    PRESCREENED: "PRUNED",
    WARM_START_OF: "COMPLETE",
}
MARK_KEYS = tuple(MARK_STATES)

# What a trained trial reports (nas.proxies.loop) and the searcher stores when it ends: figures, then curves.
SCALAR_METRICS = (
    "val_loss",
    "predicted_loss",
    "train_loss",
    "step",
    PARAMS,
    NON_EMBEDDING_PARAMS,
    FLOPS,
    "latency_ms",
    "throughput",
    "peak_memory_mb",
    "peak_memory_kind",
    "wall_time_s",
    "knn_accuracy",
    "zero_cost_grad_norm",
    "zero_cost_snip",
    "zero_cost_ms",
    CONSTRAINT_VIOLATION,
    NODE_ID,
    CUDA_VISIBLE_DEVICES,
    DEVICE,
)
CURVES = ("val_curve", "train_curve")
STORED_METRICS = SCALAR_METRICS + CURVES
# What the API shows of a trial (curves are left out of pages of trials: they are the bulk of a record).
SHOWN_METRICS = (*SCALAR_METRICS, RESTARTS, FAIL_REASON, *MARK_KEYS)
SHOWN_ATTRS = (ARCHITECTURE, HYPERPARAMETERS, *SHOWN_METRICS)


def why_not_complete(user_attrs: Mapping[str, Any]) -> str:
    """Why a trial did not complete, in one line (empty when none was recorded)."""
    return str(user_attrs.get(FAIL_REASON) or user_attrs.get(INFEASIBLE) or user_attrs.get(CONSTRAINT_VIOLATION) or "")


# --- statuses ----------------------------------------------------------------------------------------------

StudyStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
STUDY_STATUSES: tuple[str, ...] = get_args(StudyStatus)
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")
ACTIVE_STATUSES = ("queued", "running")  # a runner will (still) work on it
TrialStateName = Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
TRIAL_STATE_NAMES: tuple[str, ...] = get_args(TrialStateName)  # Optuna's TrialState names (a test checks)

# --- counting ----------------------------------------------------------------------------------------------

COUNT_KEYS = (
    "complete",
    "pruned",
    "failed",
    "running",
    "infeasible",
    "lost",
    "duplicate",
    "prescreened",
    "warm_started",
)


def outcome(state: Any, user_attrs: Mapping[str, Any]) -> str | None:
    """The count a trial in ``state`` (an Optuna TrialState) falls in, one of COUNT_KEYS; None while it waits."""
    name = state.name
    if name == "PRUNED":
        if INFEASIBLE in user_attrs:
            return "infeasible"
        return "prescreened" if PRESCREENED in user_attrs else "pruned"
    if name == "FAIL":
        return LOST if LOST in user_attrs else "failed"
    if name == "COMPLETE":
        if DUPLICATE_OF in user_attrs:
            return "duplicate"
        return "warm_started" if WARM_START_OF in user_attrs else "complete"
    return {"RUNNING": "running"}.get(name)


def count_trials(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials by outcome: infeasible samples apart from scheduler prunes, lost trials apart from real failures."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for trial in trials:
        key = outcome(trial.state, trial.user_attrs)
        if key is not None:
            counts[key] += 1
    return counts


def counts_from_totals(by_state: Mapping[str, int], marked: Mapping[str, int]) -> dict[str, int]:
    """The same counts from SQL aggregates: trials per state name, and marked trials per mark (each on its state)."""
    infeasible, lost, duplicate = marked.get(INFEASIBLE, 0), marked.get(LOST, 0), marked.get(DUPLICATE_OF, 0)
    prescreened, warm_started = marked.get(PRESCREENED, 0), marked.get(WARM_START_OF, 0)
    return {
        "complete": by_state.get("COMPLETE", 0) - duplicate - warm_started,
        "pruned": by_state.get("PRUNED", 0) - infeasible - prescreened,
        "failed": by_state.get("FAIL", 0) - lost,
        "running": by_state.get("RUNNING", 0),
        "infeasible": infeasible,
        "lost": lost,
        "duplicate": duplicate,
        "prescreened": prescreened,
        "warm_started": warm_started,
    }


def finished(counts: Mapping[str, int]) -> int:
    """Trials that used up the budget: trained to the end, pruned by the scheduler, or failed on their own
    (not infeasible samples, lost trials, duplicates, samples screened out before training or trials copied from
    earlier studies)."""
    return counts["complete"] + counts["pruned"] + counts["failed"]


# --- best --------------------------------------------------------------------------------------------------


def best_trials(study: Any, limit: int = 5) -> list[FrozenTrial]:
    """Single objective: the ``limit`` lowest (or highest) first values. Several: the Pareto front, by the first.
    A duplicate's result is its original's, so only the original is listed. Trials copied by a warm start are
    results of this space like any other, so they may be listed."""
    if len(study.directions) > 1:
        front = [t for t in study.best_trials if DUPLICATE_OF not in t.user_attrs]
        return sorted(front, key=lambda t: t.values[0])[:limit]
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if DUPLICATE_OF not in t.user_attrs
    ]
    return sorted(complete, key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)[:limit]
