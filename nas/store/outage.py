"""Riding out a database outage: which errors mean "the database cannot be reached right now", and a bounded retry
with backoff for the writes and reads a study cannot do without.

A PostgreSQL restart takes a few seconds; every runner, searcher and API process sees its pooled connections die
and new ones refused meanwhile. Retrying for ``NAS_DB_RETRY_S`` seconds (default 30) lets a blip cost nothing; an
outage that outlasts it is raised as :class:`DatabaseUnavailable`, which the runner answers by queueing the study to
resume and the API by a 503. Errors that only look alike (a missing table, a constraint) are never retried.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

from nas.errors import UserError, first_line

log = logging.getLogger("nas.store")
T = TypeVar("T")
DEFAULT_RETRY_S = 30.0
FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 8.0
# sqlite3 raises OperationalError for a missing table as well as for a lock; only these messages mean "try later".
SQLITE_TRANSIENT = ("database is locked", "unable to open database file", "disk i/o error")


class DatabaseUnavailable(UserError, ConnectionError):
    """The database stayed unreachable for longer than the retries wait."""


def retry_budget_s() -> float:
    """How long a retried call waits for the database in all (``NAS_DB_RETRY_S``, seconds)."""
    value = os.environ.get("NAS_DB_RETRY_S")
    return float(value) if value else DEFAULT_RETRY_S


def is_outage(error: BaseException) -> bool:
    """True if ``error``, or an error it was raised from, says the database cannot be reached (a refused or dropped
    connection, a server shutting down, a pool that could not connect), as opposed to a request it rejected."""
    from sqlalchemy import exc

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable | exc.DisconnectionError | exc.TimeoutError):
            return True
        if isinstance(current, exc.DBAPIError) and (current.connection_invalidated or _transient_driver_error(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_driver_error(error) -> bool:
    """SQLAlchemy's OperationalError / InterfaceError wrap the driver's; psycopg's mean connection trouble, sqlite3's
    only with the messages above."""
    from sqlalchemy import exc

    if not isinstance(error, exc.OperationalError | exc.InterfaceError):
        return False
    if type(error.orig).__module__.startswith("sqlite3"):
        return any(text in str(error.orig).lower() for text in SQLITE_TRANSIENT)
    return True


def call_with_retry(call: Callable[[], T], what: str, budget_s: float | None = None) -> T:
    """``call()``, retried with exponential backoff (0.5 s doubling to 8 s, jittered) while the database is out, for
    at most ``budget_s`` (default :func:`retry_budget_s`); then DatabaseUnavailable. Each retry is logged."""
    budget = retry_budget_s() if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    pause = FIRST_PAUSE_S
    while True:
        try:
            return call()
        except Exception as error:
            if isinstance(error, DatabaseUnavailable) or not is_outage(error):
                raise  # a nested retry already waited its budget, or the database rejected the request
            left = deadline - time.monotonic()
            if left <= 0:
                raise DatabaseUnavailable(
                    f"the database was unreachable for {budget:.0f} s ({what}): {first_line(root_cause(error))}"
                ) from error
            wait = min(pause * random.uniform(0.8, 1.2), left)
            log.warning(
                "database unreachable (%s); retrying %s in %.1f s (%.0f s left)",
                first_line(root_cause(error)),
                what,
                wait,
                left,
            )
            time.sleep(wait)
            pause = min(pause * 2, LONGEST_PAUSE_S)


def root_cause(error: BaseException) -> BaseException:
    """The first error of a chain (Optuna's StorageInternalError says less than the driver's error it wraps)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error
