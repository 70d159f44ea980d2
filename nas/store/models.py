"""The service's own tables (SQLAlchemy 2). Optuna keeps its tables in the same database."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Study(Base):
    """One search: its space as submitted, its budget and where it stands. ``name`` is the Optuna study name."""

    __tablename__ = "nas_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, index=True)
    space_name: Mapped[str] = mapped_column(String(200))
    family: Mapped[str] = mapped_column(String(50))
    task: Mapped[str] = mapped_column(String(50))
    spec: Mapped[str] = mapped_column(Text)  # the resolved space YAML (overrides applied)
    trials: Mapped[int] = mapped_column(Integer)  # the trial budget
    status: Mapped[str] = mapped_column(String(20), index=True, default="queued")
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Runner bookkeeping: who runs it, until when its lease holds, and whether a cancel was asked for.
    runner_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # "search", or "audit": a retraining of a finished study's architectures at longer length (nas.audit).
    kind: Mapped[str] = mapped_column(String(20), default="search")
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    audit_plan: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: top, random, factor, trials
    audit_result: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the rank agreement measured


class ApiToken(Base):
    """A bearer token, stored as its SHA-256 only. ``name`` is the owner its studies belong to."""

    __tablename__ = "nas_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Runner(Base):
    """A runner process and its last heartbeat (for /metrics and for finding dead runners)."""

    __tablename__ = "nas_runners"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    study_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
