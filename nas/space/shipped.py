"""The spaces shipped in search_spaces/ (found beside the package in a checkout, or via NAS_SPACES_DIR)."""

from __future__ import annotations

import os
from pathlib import Path


def spaces_dir() -> Path:
    configured = os.environ.get("NAS_SPACES_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "search_spaces"


def list_shipped_spaces() -> list[Path]:
    folder = spaces_dir()
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def shipped_space_path(name_or_path: str) -> Path:
    """A path as given, or the shipped space of that name (``text-mlm-tiny`` -> search_spaces/text-mlm-tiny.yaml)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    return spaces_dir() / f"{name_or_path}.yaml"
