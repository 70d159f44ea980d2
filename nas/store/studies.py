"""Study rows: create, move through their statuses, read back. The schema is brought up to date once at start-up
(``nas.store.db.upgrade``: serve, worker and every CLI command that opens the database), never here."""

from __future__ import annotations

import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from nas.errors import UserError
from nas.space.load import parse_space
from nas.space.spec import SearchSpace, SpaceError
from nas.store.db import session_scope
from nas.store.models import Study, utcnow
from nas.store.trials import FINAL_STATUSES


class StudyExists(UserError, ValueError):
    pass


class StudyNotFound(UserError, LookupError):
    pass


def create_study_row(
    url: str, name: str, space: SearchSpace, status: str = "queued", owner: str | None = None
) -> Study:
    with session_scope(url) as session:
        return add_study_row(session, name, space, status, owner)


def add_study_row(session, name: str, space: SearchSpace, status: str = "queued", owner: str | None = None) -> Study:
    """Insert a new study row in ``session`` (the CLI's own session, or an API request's); StudyExists if taken."""
    if session.scalar(select(Study.id).where(Study.name == name)) is not None:
        raise StudyExists(f"a study named {name!r} already exists; choose another name (--study-name)")
    row = new_study_row(name, space, status, owner)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # another submission took the name between the check above and this insert
        raise StudyExists(f"a study named {name!r} already exists; choose another name (--study-name)") from None
    return row


def new_study_row(
    name: str,
    space: SearchSpace,
    status: str = "queued",
    owner: str | None = None,
    kind: str = "search",
    parent_id: int | None = None,
    audit_plan: str | None = None,
) -> Study:
    """A study row for ``space`` (not yet added to a session): the one constructor for the CLI and the API."""
    now = utcnow()
    return Study(
        name=name,
        space_name=space.name,
        family=space.family,
        task=space.task,
        spec=space.to_yaml(),
        trials=space.search.trials,
        status=status,
        owner=owner,
        created_at=now,
        started_at=now if status == "running" else None,
        attempts=0,
        cancel_requested=False,
        kind=kind,
        parent_id=parent_id,
        audit_plan=audit_plan,
    )


def set_status(url: str, name: str, status: str, error: str | None = None) -> None:
    with session_scope(url) as session:
        row = session.scalar(select(Study).where(Study.name == name))
        if row is None:
            raise StudyNotFound(name)
        row.status = status
        row.error = error
        if status == "running" and row.started_at is None:
            row.started_at = utcnow()
        if status in FINAL_STATUSES:
            row.finished_at = utcnow()


def get_study_row(url: str, name: str) -> Study:
    with session_scope(url) as session:
        row = session.scalar(select(Study).where(Study.name == name))
        if row is None:
            raise StudyNotFound(f"no study named {name!r} in this database")
        return row


def list_study_rows(url: str) -> list[Study]:
    with session_scope(url) as session:
        return list(session.scalars(select(Study).order_by(Study.created_at.desc())))


def newest_audit(session, parent_id: int, with_report: bool = False) -> Study | None:
    """The newest audit of study ``parent_id`` (only among those that stored a report, if asked)."""
    query = select(Study).where(Study.parent_id == parent_id)
    if with_report:
        query = query.where(Study.audit_result.is_not(None))
    return session.scalar(query.order_by(Study.created_at.desc(), Study.id.desc()).limit(1))


def latest_audit_report(url: str, row: Study) -> dict | None:
    """The report of the newest audit that checked ``row`` (or, for an audit, its own), if one has one."""
    import json

    if row.kind == "audit":
        return json.loads(row.audit_result) if row.audit_result else None
    with session_scope(url) as session:
        audit = newest_audit(session, row.id, with_report=True)
        result = audit.audit_result if audit is not None else None
    return json.loads(result) if result else None


def stored_space(row: Study) -> SearchSpace:
    """The space a study row was submitted with (its data and satisfiability not checked again); SpaceError when
    an older release stored a space this one no longer accepts."""
    return parse_space(yaml.safe_load(row.spec), row.name, check_data=False, check_satisfiable=False)


def check_warm_start(session, space: SearchSpace, study_name: str, owner: str | None = None) -> None:
    """Check each study ``search.warm_start`` names: it exists (and, with ``owner``, belongs
    to that owner: another's study reads as missing), it is not the study itself, and it searched the same space
    (``SearchSpace.fingerprint``; the terms that differ are named). SpaceError lists every problem by YAML path."""
    errors: list[tuple[str, str]] = []
    for index, name in enumerate(space.search.warm_start):
        path = f"search.warm_start[{index}]"
        row = session.scalar(select(Study).where(Study.name == name))
        if name == study_name:
            errors.append((path, "a study cannot warm-start from itself"))
        elif row is None or (owner is not None and row.owner != owner):
            errors.append((path, f"no study named {name!r}" + (" of yours" if owner is not None else "")))
        else:
            try:
                earlier = stored_space(row)
            except SpaceError:
                errors.append((path, f"the stored space of study {name!r} no longer loads, so its trials cannot seed"))
                continue
            if earlier.fingerprint != space.fingerprint:
                differences = space.differences(earlier)
                shown = "; ".join(differences[:5]) + (
                    f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
                )
                errors.append(
                    (
                        path,
                        f"study {name!r} searched a different space, so its results do not carry over "
                        f"(this study vs {name!r}: {shown})",
                    )
                )
    if errors:
        raise SpaceError(errors, "search.warm_start")
