"""Study rows for the API: submit (validate, then insert as queued), read with counts, change status."""

from __future__ import annotations

import math
import re
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nas.space import (
    SearchSpace,
    SpaceError,
    apply_overrides,
    list_shipped_spaces,
    load_space,
    load_space_text,
    parse_space,
)
from nas.space.shipped import spaces_dir
from nas.store.models import Study, utcnow
from nas.store.studies import StudyExists, add_study_row, check_warm_start
from nas.store.trials import StudyStatus
from services.api import queries
from services.api.schemas import (
    AuditCreate,
    AuditPublic,
    BestPublic,
    SpaceSummary,
    StudyCreate,
    StudyPublic,
    TrialCounts,
)
from services.auth import Principal

RESUMABLE = ("interrupted", "failed", "cancelled")


class Conflict(ValueError):
    """The request is well-formed but the study's state does not allow it (409)."""


def space_from_request(body: StudyCreate, max_trials: int, data_roots: tuple[Path, ...] = ()) -> SearchSpace:
    """The validated space a submission asks for; raises SpaceError (422) listing every problem. Its data.source
    is a built-in or lies inside ``data_roots`` (NAS_DATA_ROOTS)."""
    overrides = {str(k): v for k, v in body.overrides.items()}
    if body.warm_start is not None:
        overrides["search.warm_start"] = list(body.warm_start)
    if body.space is not None:
        path = spaces_dir() / f"{body.space}.yaml"
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", body.space) or not path.is_file():
            known = ", ".join(p.stem for p in list_shipped_spaces())
            raise SpaceError([("space", f"no shipped space named {body.space!r}; shipped: {known}")], body.space)
        space = load_space(path, overrides, data_roots=data_roots)
    else:
        assert body.space_yaml is not None  # StudyCreate's validator requires exactly one of space, space_yaml
        space = load_space_text(body.space_yaml, overrides, data_roots=data_roots)
    if space.search.trials > max_trials:
        raise SpaceError(
            [("search.trials", f"{space.search.trials} trials is over this service's limit of {max_trials}")]
        )
    return space


def summary(space: SearchSpace) -> SpaceSummary:
    arch = math.prod(p.size() for p in space.architecture.values())
    size = "continuous" if math.isinf(arch) else f"{arch:.0f} architectures"
    return SpaceSummary(
        name=space.name,
        family=space.family,
        task=space.task,
        description=space.description,
        trials=space.search.trials,
        objectives=list(space.objectives),
        size=size,
    )


def shipped_summary(path: Path) -> SpaceSummary:
    """A shipped space's summary, parsed once per version of its file (a parse and check takes ~5 ms a space)."""
    stat = path.stat()
    return _summary_of_file(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _summary_of_file(path: Path, _mtime_ns: int, _size: int) -> SpaceSummary:
    return summary(load_space(path))


def create_study(session: Session, body: StudyCreate, space: SearchSpace, principal: Principal) -> Study:
    """Insert the submission as queued. A warm start may name only the caller's own studies (an admin's: any)
    of the same space; SpaceError (422) otherwise."""
    from nas.controller.run import default_study_name

    for attempt in range(NAME_ATTEMPTS):
        default = default_study_name(space) + (f"-{uuid.uuid4().hex[:6]}" if attempt else "")
        name = body.name or _unused_name(session, default)
        check_warm_start(session, space, name, owner=None if principal.is_admin else principal.name)
        try:
            return add_study_row(session, name, space, status="queued", owner=principal.name)
        except StudyExists as error:
            # An unnamed submission lost a race for the default name to another in the same second: the failed
            # insert is rolled back (this transaction wrote nothing else) and a random suffix ends the contest.
            session.rollback()
            if body.name or attempt == NAME_ATTEMPTS - 1:
                raise Conflict(str(error)) from None
    raise AssertionError("unreachable: the loop returns or raises")


NAME_ATTEMPTS = 3


def _unused_name(session: Session, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``...: two unnamed submissions in one second get the same default name."""
    taken = set(session.scalars(select(Study.name).where(Study.name.startswith(name, autoescape=True))))
    return next(c for c in [name, *(f"{name}-{n}" for n in range(2, len(taken) + 2))] if c not in taken)


def create_audit(session: Session, url: str, parent: Study, body: AuditCreate) -> Study:
    """Queue an audit of ``parent`` (a runner picks it up like a study); Conflict when it cannot be audited."""
    from nas.audit.run import AuditError, add_audit_row, plan_audit

    try:
        plan, space = plan_audit(url, parent.name, body.top, body.random, body.factor)
        return add_audit_row(session, parent, plan, space)
    except AuditError as error:  # not auditable, or another request created an audit of it at the same moment
        raise Conflict(str(error)) from None


def audit_public(session: Session, url: str, row: Study) -> AuditPublic:
    """The audit's status and progress, and its report: as stored at its end, or computed from the trials so far."""
    import json

    from nas.audit.run import AuditError, AuditPlan, audit_report

    assert row.audit_plan is not None  # every audit row is created with its plan
    plan = AuditPlan.from_json(row.audit_plan)
    if row.audit_result:
        result = json.loads(row.audit_result)
    else:
        try:
            result = audit_report(url, row.name, plan)
        except AuditError:
            result = None
    return AuditPublic(
        study=study_public(session, row),
        top=plan.top,
        random=plan.random,
        factor=plan.factor,
        trials=plan.trials,
        result=result,
    )


def visible(principal: Principal):
    return True if principal.is_admin else Study.owner == principal.name


def list_studies(
    session: Session, principal: Principal, status: str | None, limit: int, offset: int
) -> tuple[list[Study], int]:
    where = [visible(principal)]
    if status:
        where.append(Study.status == status)
    total = session.scalar(select(func.count()).select_from(Study).where(*where)) or 0
    rows = session.scalars(
        select(Study).where(*where).order_by(Study.created_at.desc(), Study.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def get_study(session: Session, principal: Principal, study_id: int) -> Study | None:
    row = session.get(Study, study_id)
    if row is None or not principal.owns(row.owner):
        return None  # another owner's study is indistinguishable from a missing one
    return row


def objectives_of(row: Study) -> list[str]:
    return list(_objectives_of_spec(row.spec))


@lru_cache(maxsize=1024)
def _objectives_of_spec(spec: str) -> tuple[str, ...]:
    """Parsing a spec costs milliseconds; the same spec is asked for on every status request."""
    raw = yaml.load(spec, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    objectives = raw.get("objectives", ["val_loss"])
    return (objectives,) if isinstance(objectives, str) else tuple(objectives)


def study_public(session: Session, row: Study) -> StudyPublic:
    return study_publics(session, [row])[0]


def study_publics(session: Session, rows: list[Study]) -> list[StudyPublic]:
    """Each study with its counts and best trial, in a fixed number of queries however many rows there are."""
    optuna_studies = queries.optuna_studies(session, [row.name for row in rows])
    totals = queries.study_totals(session, [study.id for study in optuna_studies.values()])
    result = []
    for row in rows:
        study = optuna_studies.get(row.name)
        counts, best = TrialCounts(budget=row.trials), None
        if study is not None:
            counts = totals[study.id].counts(row.trials)
            best = next(iter(queries.best_trials(session, study, totals[study.id])), None)
        result.append(
            StudyPublic(
                id=row.id,
                name=row.name,
                space_name=row.space_name,
                family=row.family,
                task=row.task,
                status=cast(StudyStatus, row.status),  # only StudyStatus values are ever written
                owner=row.owner,
                counts=counts,
                best=best,
                objectives=objectives_of(row),
                created_at=row.created_at,
                started_at=row.started_at,
                finished_at=row.finished_at,
                error=row.error,
                cancel_requested=bool(row.cancel_requested),
                kind=cast(Literal["search", "audit"], row.kind),  # only these two kinds are ever written
                parent_id=row.parent_id,
            )
        )
    return result


def best_public(session: Session, row: Study) -> BestPublic:
    objectives = objectives_of(row)
    study = queries.optuna_study(session, row.name)
    if study is None:
        return BestPublic(multi_objective=len(objectives) > 1, objectives=objectives, directions=[], trials=[])
    trials = queries.best_trials(session, study, queries.study_totals(session, [study.id])[study.id])
    return BestPublic(
        multi_objective=len(study.directions) > 1,
        objectives=objectives,
        directions=list(study.directions),
        trials=trials,
    )


def cancel(row: Study) -> None:
    if row.status == "queued":
        row.status, row.finished_at, row.error = "cancelled", utcnow(), "cancelled before it started"
    elif row.status == "running":
        row.cancel_requested = True  # the runner's heartbeat sees this and stops the trials
    else:
        raise Conflict(f"study is {row.status}; only queued or running studies can be cancelled")


def resume(row: Study) -> None:
    if row.status not in RESUMABLE:
        raise Conflict(f"study is {row.status}; only {', '.join(RESUMABLE)} studies can be resumed")
    requeue(row)


def requeue(row: Study) -> None:
    row.status, row.error, row.finished_at, row.cancel_requested = "queued", None, None, False


def extend_budget(session: Session, row: Study, trials: int, max_trials: int) -> None:
    if row.kind == "audit":
        raise Conflict("an audit retrains the trials its plan fixed; start another audit to retrain more")
    if trials > max_trials:
        raise Conflict(f"{trials} trials is over this service's limit of {max_trials}")
    study = queries.optuna_study(session, row.name)
    finished = queries.trial_counts(session, study.id if study else None, row.trials).finished
    if trials < max(finished, 1):
        raise Conflict(f"{finished} trials have finished already; the budget cannot go below that")
    if row.status == "running":
        raise Conflict("the study is running; cancel it or wait until it ends, then raise its budget")
    raw: dict[str, Any] = yaml.safe_load(row.spec)
    raw = apply_overrides(raw, {"search.trials": trials})
    parse_space(raw, row.space_name, check_data=False, check_satisfiable=False)
    row.spec = yaml.safe_dump(raw, sort_keys=False)
    row.trials = trials
    if row.status != "queued" and trials > finished:
        requeue(row)
