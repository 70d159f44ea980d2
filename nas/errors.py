"""The one base class of errors a user can fix: the CLI prints them as ``error: ...`` lines and exits 1, never a
traceback; the API maps its own subclasses to 4xx answers. Light on purpose: ``nas.cli`` imports it at start-up."""

from __future__ import annotations


class UserError(Exception):
    """What was asked for cannot be done as asked; the message says why and, where it can, what to do."""

    def lines(self) -> list[str]:
        """What the CLI prints, one line each."""
        return [f"error: {self}"]
