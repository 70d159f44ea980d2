"""The proxy class of a task name (the names themselves live in nas.catalog, the bottom layer); its module is
imported on first use so that validating a space (or ``nas --help``) never imports torch."""

from __future__ import annotations

from nas.catalog import TASKS, load_target

__all__ = ["TASKS", "get_proxy"]


def get_proxy(name: str):
    """The proxy class registered under ``name``."""
    return load_target(TASKS.get(name).target)
