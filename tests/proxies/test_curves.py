from __future__ import annotations

import pytest

from nas.proxies.curves import fit_power_law, predict_loss


def test_power_law__recovers_a_planted_curve_and_extrapolates_it():
    steps = [20, 40, 60, 80, 100, 120]
    losses = [2.0 + 3.0 * t**-0.5 for t in steps]
    a, b, c = fit_power_law(steps, losses)
    assert (a, b, c) == pytest.approx((2.0, 3.0, 0.5), abs=1e-6)
    assert predict_loss(steps, losses, 1200) == pytest.approx(2.0 + 3.0 * 1200**-0.5, abs=1e-6)


def test_power_law__never_predicts_a_rising_curve_and_needs_three_points():
    assert predict_loss([10, 20], [3.0, 2.9], 100) is None
    rising = [1.0, 1.2, 1.5, 1.9]
    assert predict_loss([10, 20, 30, 40], rising, 400) == pytest.approx(sum(rising) / len(rising))  # b clipped at 0
