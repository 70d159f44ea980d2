"""Reads of Optuna's tables in SQL, paged and indexed, so a study with 10,000 trials answers in
milliseconds. (``optuna.Study.get_trials`` loads every trial; the API never calls it.)

Measured by ``benchmarks/api_load.py``. Every query here is bounded by the study it reads, never by the whole
database; the best trials are kept per study until its set of COMPLETE trials changes."""

from __future__ import annotations

import json
from collections import OrderedDict, defaultdict
from datetime import datetime, timezone
from functools import lru_cache
from threading import Lock
from typing import Any, cast

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
from sqlalchemy import Engine, Integer, String, and_, any_, bindparam, func, or_, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from nas.store.trials import (
    ARCHITECTURE,
    DUPLICATE_OF,
    HYPERPARAMETERS,
    MARK_KEYS,
    MARK_STATES,
    SHOWN_ATTRS,
    SHOWN_METRICS,
    counts_from_totals,
    finished,
)
from services.api.schemas import TrialCounts, TrialPublic

MARKS_INDEX = "ix_nas_trial_user_attributes_marked"


def _utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive UTC; the API answers with aware UTC times."""
    return value.replace(tzinfo=timezone.utc) if value is not None else None


def optuna_study_id(session: Session, name: str) -> int | None:
    return session.scalar(select(StudyModel.study_id).where(StudyModel.study_name == name))


def directions(session: Session, study_id: int) -> list[str]:
    rows = (
        session.execute(
            select(StudyDirectionModel.direction)
            .where(StudyDirectionModel.study_id == study_id)
            .order_by(StudyDirectionModel.objective)
        )
        .scalars()
        .all()
    )
    return ["maximize" if d == StudyDirection.MAXIMIZE else "minimize" for d in rows]


def trial_counts(session: Session, study_id: int | None, budget: int) -> TrialCounts:
    if study_id is None:
        return TrialCounts(budget=budget)
    by_state = {
        state.name: count
        for state, count in session.execute(
            select(TrialModel.state, func.count()).where(TrialModel.study_id == study_id).group_by(TrialModel.state)
        )
    }
    marked = dict(session.execute(_marked_query(session, study_id)).all())
    totals = counts_from_totals(by_state, marked)
    return TrialCounts(budget=budget, finished=finished(totals), **totals)


def _marked_query(session: Session, study_id: int):
    """(key, count) of the study's marked trials, each mark matched to its state (nas.store.trials.MARK_STATES).
    The partial index of migrations 0003 and 0005 keeps this to the marked attributes (~1 ms for 10,000 trials)."""
    return (
        select(TrialUserAttributeModel.key, func.count())
        .join(TrialModel, TrialModel.trial_id == TrialUserAttributeModel.trial_id)
        .where(
            TrialModel.study_id == study_id,
            TrialUserAttributeModel.key.in_(MARK_KEYS),
            or_(
                *(
                    and_(TrialModel.state == TrialState[state], TrialUserAttributeModel.key == key)
                    for key, state in MARK_STATES.items()
                )
            ),
        )
        .group_by(TrialUserAttributeModel.key)
    )


def _objective_zero():
    return TrialValueModel.__table__.alias("v0")


# The best trials are a function of the study's COMPLETE trials alone: a trial never leaves COMPLETE and its
# values never change once told. So they are kept per (study, number of COMPLETE trials, highest COMPLETE
# trial id, latest completion): checking that costs one aggregate over the study's trials (~1.5 ms for 10,000)
# where the answer joins every COMPLETE trial's value and sorts (~8 ms; a Pareto front loads them all).
_BEST_CACHE: OrderedDict[tuple, list[int]] = OrderedDict()
_BEST_CACHE_SIZE = 256
_BEST_LOCK = Lock()


def best_trial_ids(session: Session, study_id: int, study_directions: list[str]) -> list[int]:
    """The single best COMPLETE trial (ORDER BY value LIMIT 1), or the Pareto front's trials; never a duplicate
    (its result is its original's)."""
    duplicate = (
        select(TrialUserAttributeModel.trial_id)
        .where(TrialUserAttributeModel.trial_id == TrialModel.trial_id, TrialUserAttributeModel.key == DUPLICATE_OF)
        .exists()
    )
    complete = and_(TrialModel.study_id == study_id, TrialModel.state == TrialState.COMPLETE, ~duplicate)
    stamp = tuple(
        session.execute(
            select(func.count(), func.max(TrialModel.trial_id), func.max(TrialModel._datetime_complete_utc)).where(
                complete
            )
        ).one()
    )
    if not stamp[0]:
        return []
    # Sessions are bound to an Engine (session_scope), never to a Connection.
    key = (str(cast(Engine, session.get_bind()).url), study_id, tuple(study_directions), *stamp)
    with _BEST_LOCK:
        if key in _BEST_CACHE:
            _BEST_CACHE.move_to_end(key)
            return list(_BEST_CACHE[key])
    ids = _best_trial_ids(session, complete, study_directions)
    with _BEST_LOCK:
        _BEST_CACHE[key] = list(ids)
        while len(_BEST_CACHE) > _BEST_CACHE_SIZE:
            _BEST_CACHE.popitem(last=False)
    return ids


def _best_trial_ids(session: Session, complete, study_directions: list[str]) -> list[int]:
    if len(study_directions) == 1:
        v0 = _objective_zero()
        order = v0.c.value.desc() if study_directions[0] == "maximize" else v0.c.value.asc()
        best = session.scalar(
            select(TrialModel.trial_id)
            .join(v0, and_(v0.c.trial_id == TrialModel.trial_id, v0.c.objective == 0))
            .where(complete, v0.c.value.is_not(None))
            .order_by(order, TrialModel.number)
            .limit(1)
        )
        return [best] if best is not None else []
    rows = session.execute(
        select(TrialValueModel.trial_id, TrialValueModel.objective, TrialValueModel.value)
        .join(TrialModel, TrialModel.trial_id == TrialValueModel.trial_id)
        .where(complete)
    ).all()
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


def trials_page(
    session: Session, study_id: int, states: list[str] | None, sort: str, descending: bool, limit: int, offset: int
) -> tuple[list[TrialPublic], int]:
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


def _among(column, ids: list | tuple, session: Session, item_type=Integer):
    """``column IN ids``. On PostgreSQL as ``= ANY(:ids)``, one array parameter: SQLAlchemy re-renders an
    expanding IN list on every execution (~1 ms of CPU for 50 ids here), and each list length is a new
    statement to psycopg's prepared-statement cache."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(item_type)))
    return column.in_(ids)


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str):
    """Parsed once per distinct JSON text: a study's trials share a handful of distributions."""
    return json_to_distribution(distribution_json)


def load_trials(session: Session, trial_ids: list[int]) -> list[TrialPublic]:
    """Trials by id, in that order: four small IN queries, never the whole study."""
    if not trial_ids:
        return []
    trial = TrialModel.__table__.c
    trials = {
        row.trial_id: row
        for row in session.execute(
            select(trial.trial_id, trial.number, trial.state, trial.datetime_start, trial.datetime_complete).where(
                _among(trial.trial_id, trial_ids, session)
            )
        )
    }
    values: dict[int, dict[int, float | None]] = defaultdict(dict)
    for value_owner, objective, value in session.execute(
        select(TrialValueModel.trial_id, TrialValueModel.objective, TrialValueModel.value).where(
            _among(TrialValueModel.trial_id, trial_ids, session)
        )
    ):
        values[value_owner][objective] = value
    params: dict[int | None, dict[str, Any]] = defaultdict(dict)  # optuna types these foreign keys Optional
    for param_owner, name, value, distribution in session.execute(
        select(
            TrialParamModel.trial_id,
            TrialParamModel.param_name,
            TrialParamModel.param_value,
            TrialParamModel.distribution_json,
        ).where(_among(TrialParamModel.trial_id, trial_ids, session))
    ):
        params[param_owner][name] = _distribution(distribution).to_external_repr(value)
    attrs: dict[int | None, dict[str, Any]] = defaultdict(dict)
    for attr_owner, key, value_json in session.execute(
        select(TrialUserAttributeModel.trial_id, TrialUserAttributeModel.key, TrialUserAttributeModel.value_json).where(
            _among(TrialUserAttributeModel.trial_id, trial_ids, session),
            _among(TrialUserAttributeModel.key, SHOWN_ATTRS, session, String),
        )
    ):
        attrs[attr_owner][key] = json.loads(value_json)
    result = []
    for trial_id in trial_ids:
        row = trials.get(trial_id)
        if row is None:
            continue
        user = attrs[trial_id]
        trial_values = values.get(trial_id)
        result.append(
            TrialPublic(
                number=row.number,
                state=row.state.name,
                values=[trial_values[k] for k in sorted(trial_values)] if trial_values else None,
                params=params[trial_id],
                architecture=user.get(ARCHITECTURE),
                hyperparameters=user.get(HYPERPARAMETERS),
                metrics={k: user[k] for k in SHOWN_METRICS if k in user},
                started_at=_utc(row.datetime_start),
                finished_at=_utc(row.datetime_complete),
            )
        )
    return result
