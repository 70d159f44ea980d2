"""Read a finished (or running) study back from the database: counts, best trials, tables (pictures: nas.plots)."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nas.models.base import get_family
from nas.store.trials import ARCHITECTURE, WARM_START_OF, best_trials, count_trials
from nas.tables import format_table


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

    describe = get_family(family).describe
    columns = [*(objectives or ["val_loss"])]
    columns += [c for c in ("val_loss", "params", "flops", "latency_ms", "knn_accuracy") if c not in columns]
    titles = {"flops": "FLOPs/sample", "latency_ms": "latency ms", "knn_accuracy": "kNN acc"}
    rows = [["#", *(titles.get(c, c) for c in columns), "architecture"]]
    for trial in trials:
        attrs = trial.user_attrs
        rows.append(
            [
                str(trial.number) + (f" (= {attrs[WARM_START_OF]})" if WARM_START_OF in attrs else ""),
                *(_number(attrs.get(c)) for c in columns),
                describe(attrs[ARCHITECTURE]) if ARCHITECTURE in attrs else "-",
            ]
        )
    return format_table(rows, rule=True)


def study_report(study: optuna.Study, row: Any, limit: int = 5) -> str:
    counts = count_trials(study.get_trials(deepcopy=False))
    lines = [
        f"study     {row.name}  ({row.space_name}: {row.family} / {row.task})",
        f"status    {row.status}" + (f"  ({row.error})" if row.error else ""),
        f"trials    {counts['complete']} complete, {counts['pruned']} pruned, {counts['failed']} failed, "
        f"{counts['running']} running of {row.trials}; {counts['infeasible']} infeasible samples skipped"
        + (f", {counts['lost']} cut short (re-run on resume)" if counts["lost"] else "")
        + (f", {counts['duplicate']} duplicates reused" if counts["duplicate"] else "")
        + (f", {counts['prescreened']} screened out at initialisation" if counts["prescreened"] else "")
        + (f", {counts['warm_started']} copied from earlier studies" if counts["warm_started"] else ""),
        f"times     created {row.created_at:%Y-%m-%d %H:%M:%S}"
        + (f", started {row.started_at:%H:%M:%S}" if row.started_at else "")
        + (f", finished {row.finished_at:%H:%M:%S}" if row.finished_at else ""),
    ]
    best = best_trials(study, limit)
    if best:
        title = "Pareto front" if len(study.directions) > 1 else "best architectures"
        lines += ["", title, trials_table(best, row.family, study.user_attrs.get("objectives"))]
        lines += ["", f"best trial #{best[0].number}: {best[0].user_attrs.get(ARCHITECTURE)}"]
    return "\n".join(lines)
