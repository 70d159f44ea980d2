"""Where things live: the database URL, the file home and the Ray address, read from the environment."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///nas.db"


def database_url(explicit: str | None = None) -> str:
    return explicit or os.environ.get("NAS_DATABASE_URL") or DEFAULT_DATABASE_URL


def nas_home() -> Path:
    """Root of Ray Tune experiment folders, caches and exports (``NAS_HOME``, default ``./.nas``)."""
    return Path(os.environ.get("NAS_HOME", ".nas")).resolve()


def cache_dir(kind: str) -> Path:
    path = nas_home() / "cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def ray_address() -> str | None:
    return os.environ.get("RAY_ADDRESS") or None


def staging_path(target: Path) -> Path:
    """A name beside ``target`` that no other process or call uses: write there, then ``replace`` onto ``target``.
    Runners, Ray workers and benchmarks fill one shared cache at once; a fixed ``.tmp`` name let one writer's
    rename take away another's file."""
    return target.with_name(f"{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
