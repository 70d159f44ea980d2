"""Study rows: create, move through their statuses, read back."""

from __future__ import annotations

from sqlalchemy import select

from nas.space.spec import SearchSpace
from nas.store.db import session_scope, upgrade
from nas.store.models import Study, utcnow


class StudyExists(ValueError):
    pass


class StudyNotFound(LookupError):
    pass


def create_study_row(url: str, name: str, space: SearchSpace, status: str = "queued", owner: str | None = None) -> Study:
    upgrade(url)
    with session_scope(url) as session:
        if session.scalar(select(Study).where(Study.name == name)) is not None:
            raise StudyExists(f"a study named {name!r} already exists; pick another --study-name")
        row = Study(name=name, space_name=space.name, family=space.family, task=space.task, spec=space.to_yaml(),
                    trials=space.search.trials, status=status, owner=owner, created_at=utcnow(),
                    started_at=utcnow() if status == "running" else None)
        session.add(row)
        session.flush()
        return row


def set_status(url: str, name: str, status: str, error: str | None = None) -> None:
    with session_scope(url) as session:
        row = session.scalar(select(Study).where(Study.name == name))
        if row is None:
            raise StudyNotFound(name)
        row.status = status
        row.error = error
        if status == "running" and row.started_at is None:
            row.started_at = utcnow()
        if status in ("succeeded", "failed", "cancelled", "interrupted"):
            row.finished_at = utcnow()


def get_study_row(url: str, name: str) -> Study:
    upgrade(url)
    with session_scope(url) as session:
        row = session.scalar(select(Study).where(Study.name == name))
        if row is None:
            raise StudyNotFound(f"no study named {name!r} in this database")
        return row


def list_study_rows(url: str) -> list[Study]:
    upgrade(url)
    with session_scope(url) as session:
        return list(session.scalars(select(Study).order_by(Study.created_at.desc())))
