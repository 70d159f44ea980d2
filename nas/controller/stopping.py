"""A stop flag that Ray Tune can pickle along with the experiment (a bare ``threading.Event`` cannot).

The live flag is shared by the runner's heartbeat thread, the Tune stopper and the searcher in one
process; a pickled copy (Tune's experiment snapshot) comes back unset and is never used to control a run.
"""

from __future__ import annotations

import threading


class StopFlag:
    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._event = threading.Event()
