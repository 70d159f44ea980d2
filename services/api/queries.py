"""Reads of Optuna's tables in SQL, paged and indexed, so a study with 100,000 trials answers in milliseconds.
(``optuna.Study.get_trials`` loads every trial; the API never calls it.)

Measured by ``benchmarks/api_load.py``, where the server's CPU per request is held against ``/healthz``'s. Three
rules keep it low:

* Every query is bounded by the studies it reads, never by the whole database, and a list of studies is read with
  one query per kind of fact, not one per study.
* What cannot change is read once per process: a study's Optuna id and directions, and its best trials, kept
  until its set of COMPLETE trials changes (Optuna refuses to change a finished trial, so a COMPLETE trial's record
  is final).
* The statements are built once per dialect and take their ids as one parameter; SQLAlchemy then only binds them.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
from sqlalchemy import (
    Engine,
    Integer,
    Row,
    Select,
    String,
    and_,
    any_,
    bindparam,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy import cast as cast_
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
TRIAL = TrialModel.__table__.c
VALUE = TrialValueModel.__table__.c
PARAM = TrialParamModel.__table__.c
ATTR = TrialUserAttributeModel.__table__.c


def _utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive UTC; the API answers with aware UTC times."""
    return value.replace(tzinfo=timezone.utc) if value is not None else None


class _Bounded(OrderedDict):
    """A least-recently-used map of at most ``size`` entries, safe to share between the server's threads."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.lock = size, Lock()

    def lookup(self, key):
        with self.lock:
            if key not in self:
                return None
            self.move_to_end(key)
            return self[key]

    def keep(self, key, value) -> None:
        with self.lock:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)


def _url(session: Session) -> str:
    return str(cast(Engine, session.get_bind()).url)  # sessions are bound to an Engine (session_scope)


def _among(column, name: str, dialect: str, item_type=Integer):
    """``column IN :name``, a list bound once. On PostgreSQL as ``= ANY(:name)``, one array parameter: an expanding
    IN is re-rendered on every execution (~1 ms of CPU for 50 ids here), and each list length would be a new
    statement to psycopg's prepared-statement cache."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(item_type)))
    return column.in_(bindparam(name, expanding=True))


# --- a study's Optuna id and directions: fixed when Optuna creates the study ----------------------------------


@dataclass(frozen=True)
class OptunaStudy:
    id: int
    directions: tuple[str, ...]


_OPTUNA_STUDIES = _Bounded(4096)


@lru_cache(maxsize=8)
def _optuna_studies_statement(dialect: str) -> Select:
    return (
        select(StudyModel.study_name, StudyModel.study_id, StudyDirectionModel.objective, StudyDirectionModel.direction)
        .join(StudyDirectionModel, StudyDirectionModel.study_id == StudyModel.study_id)
        .where(_among(StudyModel.study_name, "names", dialect, String))
    )


def optuna_studies(session: Session, names: Iterable[str]) -> dict[str, OptunaStudy]:
    """The Optuna study of each name that has one (a queued study has none yet); read once per process."""
    url, found, missing = _url(session), {}, []
    for name in names:
        known = _OPTUNA_STUDIES.lookup((url, name))
        if known is None:
            missing.append(name)
        else:
            found[name] = known
    if missing:
        rows: dict[str, tuple[int, dict[int, str]]] = {}
        statement = _optuna_studies_statement(session.get_bind().dialect.name)
        for name, study_id, objective, direction in session.execute(statement, {"names": missing}).all():
            rows.setdefault(name, (study_id, {}))[1][objective] = (
                "maximize" if direction == StudyDirection.MAXIMIZE else "minimize"
            )
        for name, (study_id, directions) in rows.items():
            found[name] = OptunaStudy(study_id, tuple(directions[k] for k in sorted(directions)))
            _OPTUNA_STUDIES.keep((url, name), found[name])  # Optuna writes a study and its directions together
    return found


def optuna_study(session: Session, name: str) -> OptunaStudy | None:
    return optuna_studies(session, [name]).get(name)


# --- counts ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """A study's trials per state and marked trials per mark, and what identifies its set of COMPLETE trials."""

    by_state: dict[str, int]
    marked: dict[str, int]
    complete_stamp: tuple = ()  # (count, highest trial id) of the COMPLETE trials; () when there are none

    def counts(self, budget: int) -> TrialCounts:
        totals = counts_from_totals(self.by_state, self.marked)
        return TrialCounts(budget=budget, finished=finished(totals), **totals)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# Counting 100,000 trials costs PostgreSQL ~25 ms a read; a ledger is refreshed with the trials that changed since.
# A safety net recounts it whole this often (a trial created out of id order within one study would be missed
# until then: the searcher creates a study's trials one at a time, so it is not expected).
RECOUNT_AFTER_S = 60.0


@dataclass(frozen=True)
class _Ledger:
    """A study's trials as last read: finished trials counted (Optuna never changes a finished trial, marks
    included), unfinished ones listed, and the highest trial id seen. Immutable: a refresh makes a new one."""

    watermark: int
    finished: dict[str, int]
    marked: dict[str, int]
    open: dict[int, str]  # RUNNING or WAITING trial id -> state name
    complete_max_id: int
    counted_at: float

    def totals(self) -> Totals:
        by_state = dict(self.finished)
        for state in self.open.values():
            by_state[state] = by_state.get(state, 0) + 1
        complete = self.finished.get("COMPLETE", 0)
        return Totals(by_state, dict(self.marked), (complete, self.complete_max_id) if complete else ())


_LEDGERS = _Bounded(4096)
_NO_KEY, _NO_STATE = cast_(null(), String), cast_(null(), TRIAL.state.type)
_MARK_ON_STATE = or_(*(and_(TRIAL.state == TrialState[state], ATTR.key == key) for key, state in MARK_STATES.items()))
_ROW, _GROUP, _MARK = 0, 1, 2  # the kinds of row the ledger statements return


@lru_cache(maxsize=8)
def _count_statement(dialect: str):
    """In one statement (one snapshot): finished trials per state, the unfinished trials, marks per key."""
    studies = _among(TRIAL.study_id, "ids", dialect)
    return union_all(
        select(literal(_GROUP), TRIAL.study_id, TRIAL.state, _NO_KEY, func.count(), func.max(TRIAL.trial_id))
        .where(studies, TRIAL.state.in_(FINISHED))
        .group_by(TRIAL.study_id, TRIAL.state),
        select(literal(_ROW), TRIAL.study_id, TRIAL.state, _NO_KEY, literal(1), TRIAL.trial_id).where(
            studies, TRIAL.state.not_in(FINISHED)
        ),
        select(literal(_MARK), TRIAL.study_id, _NO_STATE, ATTR.key, func.count(), literal(0))
        .join(TrialModel.__table__, TRIAL.trial_id == ATTR.trial_id)
        .where(studies, ATTR.key.in_(MARK_KEYS), _MARK_ON_STATE)
        .group_by(TRIAL.study_id, ATTR.key),
    )


def _changes_statement(ledgers: dict[int, _Ledger]):
    """In one statement: the trials created since each ledger's watermark or open in it, and their marks."""
    changed = or_(
        *(and_(TRIAL.study_id == study_id, TRIAL.trial_id > ledger.watermark) for study_id, ledger in ledgers.items()),
        TRIAL.trial_id.in_([trial_id for ledger in ledgers.values() for trial_id in ledger.open]),
    )
    return union_all(
        select(literal(_ROW), TRIAL.study_id, TRIAL.state, _NO_KEY, literal(1), TRIAL.trial_id).where(changed),
        select(literal(_MARK), TRIAL.study_id, _NO_STATE, ATTR.key, literal(1), TRIAL.trial_id)
        .join(TrialModel.__table__, TRIAL.trial_id == ATTR.trial_id)
        .where(changed, ATTR.key.in_(MARK_KEYS), _MARK_ON_STATE),
    )


def study_totals(session: Session, study_ids: list[int]) -> dict[int, Totals]:
    """Totals of each study in ``study_ids``, from this process's ledgers: a whole count (one statement) for the
    studies it has none of (or an old one), the trials that changed (one statement) for the rest."""
    if not study_ids:
        return {}
    url, now = _url(session), time.monotonic()
    current = {i: _LEDGERS.lookup((url, i)) for i in study_ids}
    stale = [i for i, ledger in current.items() if ledger is None or now - ledger.counted_at > RECOUNT_AFTER_S]
    fresh = {i: ledger for i, ledger in current.items() if ledger is not None and i not in stale}
    ledgers = {}
    if stale:
        rows = session.execute(_count_statement(session.get_bind().dialect.name), {"ids": stale}).all()
        ledgers.update(_counted(stale, rows, now))
    if fresh:
        ledgers.update(_refreshed(fresh, session.execute(_changes_statement(fresh)).all()))
    for study_id, ledger in ledgers.items():
        _LEDGERS.keep((url, study_id), ledger)
    return {i: ledgers[i].totals() for i in study_ids}


def _counted(study_ids: list[int], rows: Sequence[Row], now: float) -> dict[int, _Ledger]:
    parts: dict[int, tuple[dict, dict, dict]] = {i: ({}, {}, {}) for i in study_ids}
    watermark, complete_max = dict.fromkeys(study_ids, 0), dict.fromkeys(study_ids, 0)
    for kind, study_id, state, key, count, trial_id in rows:
        finished_counts, marked, open_trials = parts[study_id]
        if kind == _MARK:
            marked[key] = count
            continue
        watermark[study_id] = max(watermark[study_id], trial_id)
        if kind == _GROUP:
            finished_counts[state.name] = count
            if state == TrialState.COMPLETE:
                complete_max[study_id] = trial_id
        else:
            open_trials[trial_id] = state.name
    return {i: _Ledger(watermark[i], *parts[i], complete_max[i], now) for i in study_ids}


def _refreshed(ledgers: dict[int, _Ledger], rows: Sequence[Row]) -> dict[int, _Ledger]:
    changed: dict[int, list[tuple[int, TrialState]]] = defaultdict(list)
    marks: dict[int, list[str]] = defaultdict(list)
    for kind, study_id, state, key, _, trial_id in rows:
        if kind == _MARK:
            marks[trial_id].append(key)
        else:
            changed[study_id].append((trial_id, state))
    result = {}
    for study_id, ledger in ledgers.items():
        finished_counts, marked, open_trials = dict(ledger.finished), dict(ledger.marked), dict(ledger.open)
        watermark, complete_max = ledger.watermark, ledger.complete_max_id
        for trial_id, state in changed.get(study_id, ()):
            if trial_id <= watermark and trial_id not in open_trials:
                continue  # finished before the last read: counted already
            watermark = max(watermark, trial_id)
            if state not in FINISHED:
                open_trials[trial_id] = state.name
                continue
            open_trials.pop(trial_id, None)
            finished_counts[state.name] = finished_counts.get(state.name, 0) + 1
            if state == TrialState.COMPLETE:
                complete_max = max(complete_max, trial_id)
            for key in marks.get(trial_id, ()):
                marked[key] = marked.get(key, 0) + 1
        result[study_id] = _Ledger(watermark, finished_counts, marked, open_trials, complete_max, ledger.counted_at)
    return result


def trial_counts(session: Session, study_id: int | None, budget: int) -> TrialCounts:
    if study_id is None:
        return TrialCounts(budget=budget)
    return study_totals(session, [study_id])[study_id].counts(budget)


# --- best trials ---------------------------------------------------------------------------------------------

# Kept per (database, study, COMPLETE stamp, duplicates), all from the study's totals (its ledger): the answer
# joins every COMPLETE trial's value and sorts (~8 ms for 10,000; a Pareto front loads them all) and then loads
# the trials' records.
_BEST = _Bounded(256)


def best_trials(session: Session, study: OptunaStudy, totals: Totals) -> list[TrialPublic]:
    """The single best COMPLETE trial, or the Pareto front's trials by their first value; never a duplicate (its
    result is its original's). ``totals`` must be the study's, read in this session."""
    if not totals.complete_stamp:
        return []
    key = (_url(session), study.id, study.directions, totals.complete_stamp, totals.marked.get(DUPLICATE_OF, 0))
    known = _BEST.lookup(key)
    if known is None:
        trials = load_trials(session, _best_trial_ids(session, study))
        known = tuple(sorted(trials, key=lambda t: cast(float, (t.values or [math.inf])[0])))
        _BEST.keep(key, known)
    return list(known)


def _best_trial_ids(session: Session, study: OptunaStudy) -> list[int]:
    duplicate = select(ATTR.trial_id).where(ATTR.trial_id == TRIAL.trial_id, ATTR.key == DUPLICATE_OF).exists()
    complete = and_(TRIAL.study_id == study.id, TRIAL.state == TrialState.COMPLETE, ~duplicate)
    if len(study.directions) == 1:
        v0 = TrialValueModel.__table__.alias("v0")
        order = v0.c.value.desc() if study.directions[0] == "maximize" else v0.c.value.asc()
        best = session.scalar(
            select(TRIAL.trial_id)
            .join(v0, and_(v0.c.trial_id == TRIAL.trial_id, v0.c.objective == 0))
            .where(complete, v0.c.value.is_not(None))
            .order_by(order, TRIAL.number)
            .limit(1)
        )
        return [best] if best is not None else []
    rows = session.execute(
        select(VALUE.trial_id, VALUE.objective, VALUE.value)
        .join(TrialModel.__table__, TRIAL.trial_id == VALUE.trial_id)
        .where(complete)
    ).all()
    values: dict[int, list[float]] = defaultdict(lambda: [np.nan] * len(study.directions))
    for trial_id, objective, value in rows:
        values[trial_id][objective] = value if value is not None else np.nan
    if not values:
        return []
    ids = np.array(list(values))
    matrix = np.array([values[i] for i in ids], dtype=float)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in study.directions])
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


# --- trials ----------------------------------------------------------------------------------------------------

TRIAL_COLUMNS = (TRIAL.trial_id, TRIAL.number, TRIAL.state, TRIAL.datetime_start, TRIAL.datetime_complete)


def trials_page(
    session: Session,
    study_id: int,
    states: list[str] | None,
    sort: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[TrialPublic], int]:
    """One page of the study's trials, and how many there are in ``states`` (all when empty)."""
    totals = study_totals(session, [study_id])[study_id]
    total = sum(count for state, count in totals.by_state.items() if not states or state in states)
    where = [TRIAL.study_id == study_id]
    if states:
        where.append(TRIAL.state.in_([TrialState[s] for s in states]))
    if sort == "value":
        return _page_by_value(session, where, descending, limit, offset), total
    order = TRIAL.number.desc() if descending else TRIAL.number.asc()
    if offset >= DEEP_OFFSET:  # skip the offset in the index alone (migration 0007), then read the page's rows
        ids = session.scalars(select(TRIAL.trial_id).where(*where).order_by(order).limit(limit).offset(offset)).all()
        return load_trials(session, list(ids)), total
    rows = session.execute(select(*TRIAL_COLUMNS).where(*where).order_by(order).limit(limit).offset(offset)).all()
    return _trial_records(session, rows), total


# From this offset a page by number is read in two steps: the ids from an index-only scan, then the rows. Below
# it one query is cheaper; past it the skipped rows' heap reads cost more (25 ms for the last of 100,000 trials).
DEEP_OFFSET = 1000


def _page_by_value(session: Session, where: list, descending: bool, limit: int, offset: int) -> list[TrialPublic]:
    """Trials with a first value in its order (ties by number), then the rest by number. Two queries, so that the
    first walks the values index (migration 0007) instead of sorting the study; the count of valued trials is read
    only by a page that runs past them."""
    v0 = TrialValueModel.__table__.alias("v0")
    valued = and_(v0.c.trial_id == TRIAL.trial_id, v0.c.objective == 0, v0.c.value.is_not(None))
    order = v0.c.value.desc() if descending else v0.c.value.asc()
    rows = list(
        session.execute(
            select(*TRIAL_COLUMNS)
            .join(v0, valued)
            .where(*where)
            .order_by(order, TRIAL.number)
            .limit(limit)
            .offset(offset)
        ).all()
    )
    if len(rows) < limit:
        count = session.scalar(select(func.count()).select_from(TrialModel.__table__).join(v0, valued).where(*where))
        rest = select(*TRIAL_COLUMNS).where(*where, ~select(v0.c.trial_id).where(valued).exists())
        rows += session.execute(
            rest.order_by(TRIAL.number).limit(limit - len(rows)).offset(max(0, offset - (count or 0)))
        ).all()
    return _trial_records(session, rows)


@lru_cache(maxsize=8)
def _by_ids_statements(dialect: str) -> tuple[Select, Select, Select, Select]:
    return (
        select(*TRIAL_COLUMNS).where(_among(TRIAL.trial_id, "ids", dialect)),
        select(VALUE.trial_id, VALUE.objective, VALUE.value).where(_among(VALUE.trial_id, "ids", dialect)),
        select(PARAM.trial_id, PARAM.param_name, PARAM.param_value, PARAM.distribution_json).where(
            _among(PARAM.trial_id, "ids", dialect)
        ),
        select(ATTR.trial_id, ATTR.key, ATTR.value_json).where(
            _among(ATTR.trial_id, "ids", dialect), _among(ATTR.key, "keys", dialect, String)
        ),
    )


def load_trials(session: Session, trial_ids: list[int]) -> list[TrialPublic]:
    """Trials by id, in that order."""
    if not trial_ids:
        return []
    statement = _by_ids_statements(session.get_bind().dialect.name)[0]
    rows = {row.trial_id: row for row in session.execute(statement, {"ids": list(trial_ids)}).all()}
    return _trial_records(session, [rows[i] for i in trial_ids if i in rows])


@lru_cache(maxsize=4096)
def _distribution(distribution_json: str):
    """Parsed once per distinct JSON text: a study's trials share a handful of distributions."""
    return json_to_distribution(distribution_json)


# A finished trial's record is final (Optuna refuses to change a finished trial), so it is built once per process:
# the pages clients poll (the first, the best by value) then cost no query past the page's own. ~4 KB a record.
_RECORDS = _Bounded(4096)


def _trial_records(session: Session, rows: Sequence[Row]) -> list[TrialPublic]:
    """The API's record of each trial row (TRIAL_COLUMNS), in order: kept ones, and three queries for the rest."""
    url = _url(session)
    kept = {row.trial_id: _RECORDS.lookup((url, row.trial_id)) for row in rows if row.state in FINISHED}
    built = _build_records(session, [row for row in rows if kept.get(row.trial_id) is None])
    for row in rows:
        if row.trial_id in built and row.state in FINISHED:
            _RECORDS.keep((url, row.trial_id), built[row.trial_id])
    return [kept.get(row.trial_id) or built[row.trial_id] for row in rows]


def _build_records(session: Session, rows: list[Row]) -> dict[int, TrialPublic]:
    if not rows:
        return {}
    ids = [row.trial_id for row in rows]
    _, values_of, params_of, attrs_of = _by_ids_statements(session.get_bind().dialect.name)
    values: dict[int, dict[int, float | None]] = defaultdict(dict)
    # .all(): iterating a result fetches row by row (a psycopg call each), ~5 us a row on a page of 700 rows.
    for owner, objective, value in session.execute(values_of, {"ids": ids}).all():
        values[owner][objective] = value
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    for owner, name, value, distribution in session.execute(params_of, {"ids": ids}).all():
        params[owner][name] = _distribution(distribution).to_external_repr(value)
    attr_rows = session.execute(attrs_of, {"ids": ids, "keys": list(SHOWN_ATTRS)}).all()
    # One parse of the whole list: json.loads per value cost ~2 us each, a third of a page of 50 trials.
    parsed = json.loads("[" + ",".join(value_json for _, _, value_json in attr_rows) + "]")
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    for (owner, key, _), value in zip(attr_rows, parsed):
        attrs[owner][key] = value
    records = {}
    for row in rows:
        user, trial_values = attrs[row.trial_id], values.get(row.trial_id)
        records[row.trial_id] = TrialPublic(
            number=row.number,
            state=row.state.name,
            values=[trial_values[k] for k in sorted(trial_values)] if trial_values else None,
            params=params[row.trial_id],
            architecture=user.get(ARCHITECTURE),
            hyperparameters=user.get(HYPERPARAMETERS),
            metrics={k: user[k] for k in SHOWN_METRICS if k in user},
            started_at=_utc(row.datetime_start),
            finished_at=_utc(row.datetime_complete),
        )
    return records
