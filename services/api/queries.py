"""Reads of Optuna's tables in SQL, paged and indexed, so a study with 10,000 trials answers in
milliseconds. (``optuna.Study.best_trial`` and ``get_trials`` load every trial; the API never calls them.)"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import numpy as np
from optuna.distributions import json_to_distribution
from optuna.storages._rdb.models import (
    StudyDirectionModel,
    StudyModel,
    TrialModel,
    TrialParamModel,
    TrialUserAttributeModel,
    TrialValueModel,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from services.api.schemas import TrialCounts, TrialPublic

METRIC_KEYS = ("val_loss", "train_loss", "step", "params", "non_embedding_params", "flops", "latency_ms", "throughput",
               "peak_memory_mb", "peak_memory_kind", "wall_time_s", "knn_accuracy", "fail_reason", "infeasible", "lost")


def _utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive UTC; the API answers with aware UTC times."""
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def optuna_study_id(session: Session, name: str) -> int | None:
    return session.scalar(select(StudyModel.study_id).where(StudyModel.study_name == name))


def directions(session: Session, study_id: int) -> list[str]:
    rows = session.execute(select(StudyDirectionModel.direction).where(StudyDirectionModel.study_id == study_id)
                           .order_by(StudyDirectionModel.objective)).scalars().all()
    return ["maximize" if d == StudyDirection.MAXIMIZE else "minimize" for d in rows]


def trial_counts(session: Session, study_id: int | None, budget: int) -> TrialCounts:
    counts = TrialCounts(budget=budget)
    if study_id is None:
        return counts
    by_state = dict(session.execute(select(TrialModel.state, func.count()).where(TrialModel.study_id == study_id)
                                    .group_by(TrialModel.state)).all())
    marked = dict(session.execute(
        select(TrialUserAttributeModel.key, func.count()).join(TrialModel, TrialModel.trial_id == TrialUserAttributeModel.trial_id)
        .where(TrialModel.study_id == study_id, TrialUserAttributeModel.key.in_(("infeasible", "lost")))
        .group_by(TrialUserAttributeModel.key)).all())
    infeasible, lost = marked.get("infeasible", 0), marked.get("lost", 0)
    counts.complete = by_state.get(TrialState.COMPLETE, 0)
    counts.pruned = by_state.get(TrialState.PRUNED, 0) - infeasible
    counts.failed = by_state.get(TrialState.FAIL, 0) - lost
    counts.lost = lost
    counts.running = by_state.get(TrialState.RUNNING, 0)
    counts.infeasible = infeasible
    counts.finished = counts.complete + counts.pruned + counts.failed
    return counts


def _objective_zero():
    return TrialValueModel.__table__.alias("v0")


def best_trial_ids(session: Session, study_id: int, study_directions: list[str]) -> list[int]:
    """The single best COMPLETE trial (an indexed ORDER BY ... LIMIT 1), or the Pareto front's trials."""
    complete = and_(TrialModel.study_id == study_id, TrialModel.state == TrialState.COMPLETE)
    if len(study_directions) == 1:
        v0 = _objective_zero()
        order = v0.c.value.desc() if study_directions[0] == "maximize" else v0.c.value.asc()
        best = session.scalar(select(TrialModel.trial_id).join(v0, and_(v0.c.trial_id == TrialModel.trial_id, v0.c.objective == 0))
                              .where(complete, v0.c.value.is_not(None)).order_by(order, TrialModel.number).limit(1))
        return [best] if best is not None else []
    rows = session.execute(select(TrialValueModel.trial_id, TrialValueModel.objective, TrialValueModel.value)
                           .join(TrialModel, TrialModel.trial_id == TrialValueModel.trial_id).where(complete)).all()
    values: dict[int, list[float]] = defaultdict(lambda: [np.nan] * len(study_directions))
    for trial_id, objective, value in rows:
        values[trial_id][objective] = value if value is not None else np.nan
    if not values:
        return []
    ids = np.array(list(values))
    matrix = np.array([values[i] for i in ids], dtype=float)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in study_directions])
    return [int(i) for i in ids[_pareto_mask(matrix * signs)]]


def _pareto_mask(loss: np.ndarray) -> np.ndarray:
    """Rows no other row dominates (all objectives minimised). Sort by the first objective, then sweep."""
    order = np.lexsort(loss.T[::-1])
    mask = np.zeros(len(loss), dtype=bool)
    front: list[np.ndarray] = []
    for index in order:
        row = loss[index]
        if any(np.all(kept <= row) and np.any(kept < row) for kept in front):
            continue
        front.append(row)
        mask[index] = True
    return mask


def trials_page(session: Session, study_id: int, states: list[str] | None, sort: str, descending: bool,
                limit: int, offset: int) -> tuple[list[TrialPublic], int]:
    where = [TrialModel.study_id == study_id]
    if states:
        where.append(TrialModel.state.in_([TrialState[s] for s in states]))
    total = session.scalar(select(func.count()).select_from(TrialModel).where(*where)) or 0
    query = select(TrialModel.trial_id).where(*where)
    if sort == "value":
        v0 = _objective_zero()
        query = query.outerjoin(v0, and_(v0.c.trial_id == TrialModel.trial_id, v0.c.objective == 0))
        value = v0.c.value.desc() if descending else v0.c.value.asc()
        query = query.order_by(v0.c.value.is_(None), value, TrialModel.number)
    else:
        query = query.order_by(TrialModel.number.desc() if descending else TrialModel.number.asc())
    ids = session.scalars(query.limit(limit).offset(offset)).all()
    return load_trials(session, list(ids)), total


def load_trials(session: Session, trial_ids: list[int]) -> list[TrialPublic]:
    """Trials by id, in that order: three small IN queries, never the whole study."""
    if not trial_ids:
        return []
    trials = {t.trial_id: t for t in session.scalars(select(TrialModel).where(TrialModel.trial_id.in_(trial_ids)))}
    values: dict[int, dict[int, float | None]] = defaultdict(dict)
    for row in session.execute(select(TrialValueModel.trial_id, TrialValueModel.objective, TrialValueModel.value)
                               .where(TrialValueModel.trial_id.in_(trial_ids))):
        values[row.trial_id][row.objective] = row.value
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    for row in session.execute(select(TrialParamModel.trial_id, TrialParamModel.param_name, TrialParamModel.param_value,
                                      TrialParamModel.distribution_json).where(TrialParamModel.trial_id.in_(trial_ids))):
        params[row.trial_id][row.param_name] = json_to_distribution(row.distribution_json).to_external_repr(row.param_value)
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    for row in session.execute(select(TrialUserAttributeModel.trial_id, TrialUserAttributeModel.key, TrialUserAttributeModel.value_json)
                               .where(TrialUserAttributeModel.trial_id.in_(trial_ids))):
        attrs[row.trial_id][row.key] = json.loads(row.value_json)
    result = []
    for trial_id in trial_ids:
        trial = trials.get(trial_id)
        if trial is None:
            continue
        user = attrs[trial_id]
        trial_values = values.get(trial_id)
        result.append(TrialPublic(
            number=trial.number, state=trial.state.name,
            values=[trial_values[k] for k in sorted(trial_values)] if trial_values else None,
            params=params[trial_id], architecture=user.get("architecture"), hyperparameters=user.get("hyperparameters"),
            metrics={k: user[k] for k in METRIC_KEYS if k in user},
            started_at=_utc(trial._datetime_start_utc), finished_at=_utc(trial._datetime_complete_utc),
        ))
    return result
