"""Rank agreement between a proxy's scores and the losses of longer training.

Pure Python (no numpy, no scipy) so the audit's report can be computed anywhere; tests check every figure
against scipy on planted rankings, ties included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"rankings differ in length: {len(x)} and {len(y)}")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: concordant minus discordant pairs, corrected for ties in either ranking (scipy's
    default). NaN when either side is constant or there are fewer than two items."""
    _check(x, y)
    concordant = discordant = ties_x = ties_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else math.nan


def average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, tied values sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the average ranks. NaN when either side is constant."""
    _check(x, y)
    rx, ry = average_ranks(x), average_ranks(y)
    n = len(rx)
    if n < 2:
        return math.nan
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else math.nan


def top_k_overlap(predicted: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Share of the truth's k lowest that are among the prediction's k lowest (ties broken by position)."""
    _check(predicted, truth)
    k = min(k, len(truth))
    if k < 1:
        return math.nan
    best_predicted = set(sorted(range(len(predicted)), key=lambda i: (predicted[i], i))[:k])
    best_true = set(sorted(range(len(truth)), key=lambda i: (truth[i], i))[:k])
    return len(best_predicted & best_true) / k
