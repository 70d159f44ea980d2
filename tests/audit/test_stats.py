from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from nas.audit import kendall_tau, spearman, top_k_overlap
from nas.audit.stats import average_ranks

PLANTED = {
    "identical": ([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]),
    "reversed": ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),
    "one_swap": ([1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 5, 6]),
    "ties_in_x": ([1, 1, 2, 3, 3, 3, 4], [1, 2, 3, 4, 5, 6, 7]),
    "ties_in_both": ([1, 1, 2, 2, 3, 4], [2, 1, 2, 2, 5, 3]),
    "shared_ties": ([1, 1, 2, 3], [4, 4, 5, 6]),
    "floats": ([0.31, 4.2, -1.0, 2.5, 2.5, 0.0], [5.1, 4.9, 6.0, 4.9, 5.0, 5.5]),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_kendall_tau__agrees_with_scipy_tau_b_ties_included(name):
    x, y = PLANTED[name]
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_spearman__agrees_with_scipy_ties_included(name):
    x, y = PLANTED[name]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_rank_statistics__agree_with_scipy_on_random_rankings_with_many_ties():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 20)
        x = [rng.randint(0, 4) for _ in range(n)]
        y = [rng.randint(0, 4) for _ in range(n)]
        expected_tau, expected_rho = stats.kendalltau(x, y).statistic, stats.spearmanr(x, y).statistic
        if math.isnan(expected_tau):
            assert math.isnan(kendall_tau(x, y)) and math.isnan(spearman(x, y))
        else:
            assert kendall_tau(x, y) == pytest.approx(expected_tau, abs=1e-12)
            assert spearman(x, y) == pytest.approx(expected_rho, abs=1e-12)


def test_average_ranks__share_the_mean_rank_between_ties():
    assert average_ranks([3.0, 1.0, 3.0, 2.0]) == list(stats.rankdata([3.0, 1.0, 3.0, 2.0]))


def test_rank_statistics__are_nan_for_a_constant_ranking_and_reject_unequal_lengths():
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="differ in length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_top_k_overlap__counts_the_shared_best_k():
    truth = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert top_k_overlap(truth, truth, 2) == 1.0
    assert top_k_overlap([8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], truth, 2) == 0.0
    assert top_k_overlap([1.0, 9.0, 2.0, 9.0, 9.0, 9.0, 9.0, 9.0], truth, 2) == 0.5  # picks 0 and 2; truth 0 and 1
    assert top_k_overlap([1.0, 2.0], [2.0, 1.0], 5) == 1.0  # k is capped at the number of items
