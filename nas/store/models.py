"""The service's own tables (SQLAlchemy 2). Optuna keeps its tables in the same database."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STUDY_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")


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
