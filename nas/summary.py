"""Read a finished (or running) study back from the database: counts, best trials, tables, pictures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.controller.progress import trial_counts
from nas.tables import format_table


def best_trials(study: optuna.Study, limit: int = 5) -> list[FrozenTrial]:
    """Single objective: the ``limit`` lowest (or highest) first values. Several: the Pareto front."""
    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: t.values[0])[:limit]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=reverse)[:limit]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        value = int(value)
        for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.2f}{unit}"
        return str(value)
    return f"{value:.4g}"


def trials_table(trials: list[FrozenTrial], family: str, objectives: list[str] | None = None) -> str:
    """The trials' figures: the study's objectives first (e.g. predicted_loss), then val_loss and the costs."""
    from nas.models.base import get_family

    describe = get_family(family).describe
    columns = [*(objectives or ["val_loss"])]
    columns += [c for c in ("val_loss", "params", "flops", "latency_ms", "knn_accuracy") if c not in columns]
    titles = {"flops": "FLOPs/sample", "latency_ms": "latency ms", "knn_accuracy": "kNN acc"}
    rows = [["#", *(titles.get(c, c) for c in columns), "architecture"]]
    for trial in trials:
        attrs = trial.user_attrs
        rows.append([str(trial.number), *(_number(attrs.get(c)) for c in columns),
                     describe(attrs["architecture"]) if "architecture" in attrs else "-"])
    return format_table(rows, rule=True)


def study_report(study: optuna.Study, row: Any, limit: int = 5) -> str:
    counts = trial_counts(study)
    lines = [
        f"study     {row.name}  ({row.space_name}: {row.family} / {row.task})",
        f"status    {row.status}" + (f"  ({row.error})" if row.error else ""),
        f"trials    {counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed, "
        f"{counts['running']} running of {row.trials}; {counts['infeasible']} infeasible samples skipped"
        + (f", {counts['lost']} cut short (re-run on resume)" if counts["lost"] else ""),
        f"times     created {row.created_at:%Y-%m-%d %H:%M:%S}"
        + (f", started {row.started_at:%H:%M:%S}" if row.started_at else "")
        + (f", finished {row.finished_at:%H:%M:%S}" if row.finished_at else ""),
    ]
    best = best_trials(study, limit)
    if best:
        title = "Pareto front" if len(study.directions) > 1 else "best architectures"
        lines += ["", title, trials_table(best, row.family, study.user_attrs.get("objectives"))]
        lines += ["", f"best trial #{best[0].number}: {best[0].user_attrs.get('architecture')}"]
    return "\n".join(lines)


def write_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Optimisation history (one objective) or Pareto front (several), as PNG files in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import warnings

    from optuna.visualization import matplotlib as optuna_plots

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(study.directions) > 1:
            names = study.user_attrs.get("objectives")
            axes = optuna_plots.plot_pareto_front(study, target_names=names)
            target = out / "pareto_front.png"
        else:
            axes = optuna_plots.plot_optimization_history(study, target_name=(study.user_attrs.get("objectives") or ["val_loss"])[0])
            target = out / "optimization_history.png"
        axes.figure.savefig(target, dpi=120, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(target)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(study.directions) == 1 and complete:
            figure, axis = plt.subplots(figsize=(6, 4))
            axis.scatter([t.user_attrs.get("params", 0) for t in complete], [t.value for t in complete])
            axis.set_xscale("log")
            axis.set_xlabel("parameters")
            axis.set_ylabel((study.user_attrs.get("objectives") or ["val_loss"])[0])
            axis.set_title(f"{study.study_name}: loss against size")
            target = out / "loss_vs_params.png"
            figure.savefig(target, dpi=120, bbox_inches="tight")
            plt.close(figure)
            written.append(target)
    return written
