"""The longer run a proxy is judged against: the same recipe at ``factor`` times the proxy's steps.

Shared by `nas audit` and benchmarks/proxy_fidelity.py so both judge the proxy by the same yardstick. The long
run is what full pretraining would do with the trial's hyperparameters: warm-up plus cosine decay over its
whole length (whatever schedule the proxy uses), the same width rule for the learning rate, and validation
over every held-out sample (up to 256 batches) rather than the proxy's few.
"""

from __future__ import annotations

from typing import Any

from nas.space.spec import SearchSpace

# Every held-out sample of the shipped spaces (fixed_rows() stops at the end of the split), but at most 256
# batches: the validation set sits on the device during the run, and a large user corpus must not fill it.
ALL_VALIDATION_BATCHES = 256
LONG_RUN_EVALS = 10  # the long run logs its curve every 10% of its steps, as a pretraining run would


def long_run_overrides(space: SearchSpace, factor: float) -> dict[str, Any]:
    """``--set`` style overrides that turn ``space``'s proxy into the long reference run."""
    steps = max(1, int(round(space.proxy.steps * factor)))
    return {
        "proxy.steps": steps,
        "proxy.eval_every": max(1, steps // LONG_RUN_EVALS),
        "proxy.eval_batches": ALL_VALIDATION_BATCHES,
        "proxy.schedule": "cosine",
        "proxy.predict": "none",
    }


def proxy_score(metrics: dict[str, Any], space: SearchSpace) -> float:
    """What the proxy ranks by: the space's first objective (``val_loss``, or ``predicted_loss`` where it predicts)."""
    return float(metrics[space.objectives[0]])
