"""Live progress of a search: a tqdm bar on the driver, fed from the searcher's Optuna study."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from nas.store.trials import count_trials


class TrialTracker(Callback):
    """Keeps Ray's trial objects by id, so the searcher can read a failed trial's error text."""

    def __init__(self, trials: dict[str, Any]):
        self.trials = trials

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials[trial.trial_id] = trial


class ProgressBar(Callback):
    """``done 5 | pruned 2 | failed 0 | best 4.21`` of the trial budget, with tqdm's ETA."""

    def __init__(self, searcher: Any, budget: int, already_finished: int = 0, enabled: bool = True):
        self.searcher = searcher
        self.budget = budget
        self.offset = already_finished
        self.enabled = enabled
        self._bar = None
        self._last = (-1, -1, -1)
        self._last_refresh = 0.0

    def setup(self, **info):
        if self.enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.budget, unit="trial", dynamic_ncols=True, desc="search")

    def on_step_end(self, iteration, trials, **info):
        if self._bar is None or time.monotonic() - self._last_refresh < 0.5:
            return
        self._last_refresh = time.monotonic()
        self.refresh()

    def refresh(self) -> None:
        counts = count_trials(self.searcher.study.get_trials(deepcopy=False))
        key = (counts["complete"], counts["pruned"], counts["failed"])
        if key == self._last or self._bar is None:
            return
        self._last = key
        finished = sum(key) - self.offset
        self._bar.n = min(finished, self.budget)
        best = best_value_text(self.searcher.study)
        self._bar.set_postfix_str(f"done {key[0]} | pruned {key[1]} | failed {key[2]} | best {best}", refresh=False)
        self._bar.refresh()

    def on_experiment_end(self, trials, **info):
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self.refresh()
            self._bar.close()
            self._bar = None


def best_value_text(study) -> str:
    try:
        if len(study.directions) > 1:
            return f"{len(study.best_trials)} on the Pareto front"
        return f"{study.best_value:.4g}"
    except ValueError:
        return "-"
