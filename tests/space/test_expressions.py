from __future__ import annotations

import pytest

from nas.space.expressions import Expression, ExpressionError, UnboundName


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("hidden_size % num_heads == 0", {"hidden_size": 64, "num_heads": 4}, True),
        ("hidden_size % num_heads == 0", {"hidden_size": 64, "num_heads": 6}, False),
        ("params <= 5_000_000", {"params": 5_000_001}, False),
        ("1 < num_layers <= 4", {"num_layers": 4}, True),
        ("block == 'bert' or num_layers < 3", {"block": "modernbert", "num_layers": 4}, False),
        ("block in ('bert', 'modernbert')", {"block": "bert"}, True),
        ("max(a, b) // 2 == 3 and not a > b", {"a": 6, "b": 7}, True),
        ("(a if a > 0 else -a) ** 2 == 9", {"a": -3}, True),
    ],
)
def test_expression__evaluates_without_eval(text, env, expected):
    assert Expression(text)(env) is expected


@pytest.mark.parametrize("text", ["", "open('x')", "a.b", "lambda: 1", "a[0]", "f'{a}'", "2 ** 1000", "x = 1"])
def test_expression__rejects_unsafe_or_malformed_text(text):
    with pytest.raises(ExpressionError):
        Expression(text)({}) if text == "2 ** 1000" else Expression(text)


def test_expression__collects_names_and_reports_unbound_ones():
    expression = Expression("a + b > c")
    assert expression.names == {"a", "b", "c"}
    with pytest.raises(UnboundName):
        expression({"a": 1, "b": 2})


@pytest.mark.parametrize(
    ("text", "env", "sign"),
    [
        ("latency_ms <= 5", {"latency_ms": 7.0}, 1),  # broken: positive, so a sampler sees how far off it is
        ("latency_ms <= 5", {"latency_ms": 4.0}, -1),
        ("flops >= 1000", {"flops": 500}, 1),
        ("x < 0", {"x": 0}, 1),  # a strict bound met with equality is still broken
        ("x <= 0", {"x": 0}, 0),
        ("hidden_size % num_heads == 0", {"hidden_size": 6, "num_heads": 4}, 1),
        ("hidden_size % num_heads == 0", {"hidden_size": 8, "num_heads": 4}, 0),
    ],
)
def test_expression__violation_follows_optunas_constraint_sign(text, env, sign):
    value = Expression(text).violation(env)
    assert (value > 0) == (sign > 0) and (value < 0) == (sign < 0)
    assert (value > 0) == (not Expression(text)(env))


def test_expression__violation_grows_with_the_distance_past_a_bound():
    bound = Expression("latency_ms <= 5")
    assert 0 < bound.violation({"latency_ms": 6}) < bound.violation({"latency_ms": 50})
