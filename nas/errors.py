"""The one base class of errors a user can fix: the CLI prints them as ``error: ...`` lines and exits 1, never a
traceback; the API maps its own subclasses to 4xx answers. Light on purpose: ``nas.cli`` imports it at start-up."""

from __future__ import annotations

import logging
import uuid


class UserError(Exception):
    """What was asked for cannot be done as asked; the message says why and, where it can, what to do."""

    def lines(self) -> list[str]:
        """What the CLI prints, one line each."""
        return [f"error: {self}"]


def first_line(error: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: what a log line, a study's ``error`` or an
    API client may see of an error. A message that is a whole traceback (Ray's and Tune's carry the remote one) is
    shown by its last line, the error it ends in."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback (most recent call last)"):
        lines = lines[-1:]
    message = f"{type(error).__name__}: {lines[0].strip()}" if lines else type(error).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def failure_message(error: BaseException, logger: logging.Logger, context: str) -> str:
    """What a user is told of ``error`` (a study's ``error``, an API's 500): a user's mistake as its message; anything
    else as its first line and a reference id, with the whole traceback in ``logger``'s output under that id."""
    if isinstance(error, UserError):
        return str(error)
    reference = uuid.uuid4().hex[:10]
    logger.error("%s [reference %s]", context, reference, exc_info=error)
    return f"{first_line(error)} (reference {reference} in the server log)"
