"""A stop flag that Ray Tune can pickle along with the experiment (a bare ``threading.Event`` cannot).

The live flag is shared by the runner's heartbeat thread, the Tune stopper and the searcher in one
process; a pickled copy (Tune's experiment snapshot) comes back unset and is never used to control a run.
The flag says why it was set: a cancel (the study ends ``cancelled``) or a lost claim (another runner holds the
study now, so this one stops writing to it).
"""

from __future__ import annotations

import threading

CANCELLED = "cancelled"
CLAIM_LOST = "claim lost"


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str = CANCELLED) -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    @property
    def claim_lost(self) -> bool:
        """Another runner took the study over (this one's lease expired): write nothing more to it."""
        return self.reason == CLAIM_LOST

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._event = threading.Event()
        self.reason = None
