"""Learning-curve extrapolation: predict the validation loss a longer run would reach.

A short proxy run mostly measures how fast a model starts, and small models start fast. Fitting a saturating
power law in steps, ``L(t) = a + b * t^(-c)`` (the form of Kaplan et al., 2020, "Scaling Laws for Neural
Language Models", and of the learning-curve studies of Domhan et al., 2015), to the validation losses seen so
far and reading it off at the reference length ranks models by where they are heading instead.

The fit is a grid over the exponent with closed-form least squares for ``a`` and ``b`` at each grid point:
deterministic, no optimiser to diverge, and cheap enough to run after every evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

EXPONENTS = tuple(0.05 * k for k in range(1, 41))  # c in (0, 2]
MIN_POINTS = 3


def fit_power_law(steps: Sequence[float], losses: Sequence[float]) -> tuple[float, float, float] | None:
    """(a, b, c) minimising the squared error with b >= 0 (a curve that falls); None with too few points."""
    points = [(float(t), float(y)) for t, y in zip(steps, losses) if t > 0 and math.isfinite(y)]
    if len(points) < MIN_POINTS:
        return None
    best: tuple[float, float, float, float] | None = None
    for c in EXPONENTS:
        xs = [t**-c for t, _ in points]
        ys = [y for _, y in points]
        n = len(xs)
        mean_x, mean_y = sum(xs) / n, sum(ys) / n
        var_x = sum((x - mean_x) ** 2 for x in xs)
        b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var_x if var_x > 0 else 0.0
        b = max(b, 0.0)
        a = mean_y - b * mean_x
        error = sum((a + b * x - y) ** 2 for x, y in zip(xs, ys))
        if best is None or error < best[0]:
            best = (error, a, b, c)
    assert best is not None
    return best[1], best[2], best[3]


def predict_loss(steps: Sequence[float], losses: Sequence[float], at_step: float) -> float | None:
    """The fitted curve's loss at ``at_step``; None when there are fewer than three points to fit."""
    fit = fit_power_law(steps, losses)
    if fit is None:
        return None
    a, b, c = fit
    return a + b * at_step**-c
