"""A small, safe evaluator for constraint expressions such as ``hidden_size % num_heads == 0``.

The expression is parsed with :mod:`ast` and compiled into a tree of closures over a whitelist of node
types; nothing is ever passed to ``eval``. Names resolve against the sampled configuration plus derived
quantities (``params``, ``non_embedding_params``).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

MAX_EXPRESSION_LENGTH = 500
MAX_POWER_EXPONENT = 64

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ORDER = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "log2": math.log2,
    "sqrt": math.sqrt,
}


class ExpressionError(ValueError):
    """The expression is malformed or uses something the evaluator does not allow."""


class UnboundName(LookupError):
    """A name the expression uses has no value in this sample (e.g. it belongs to an inactive branch)."""


Env = Mapping[str, Any]
Node = Callable[[Env], Any]


class Expression:
    """A parsed constraint: ``Expression("params <= 5e6")(env) -> bool``."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise ExpressionError("a constraint must be a non-empty string expression")
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_LENGTH} characters")
        self.text = text.strip()
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"cannot parse {self.text!r}: {exc.msg}") from None
        self.names: set[str] = set()
        self._node = self._compile(tree.body)
        body = tree.body
        self._bound: tuple[Node, type, Node] | None = None
        if isinstance(body, ast.Compare) and len(body.ops) == 1 and type(body.ops[0]) in _ORDER:
            self._bound = (self._compile(body.left), type(body.ops[0]), self._compile(body.comparators[0]))

    def __call__(self, env: Env) -> Any:
        return self._node(env)

    def violation(self, env: Env) -> float:
        """How far ``env`` is from satisfying this expression, in Optuna's constraint convention (<= 0 satisfied),
        so that a sampler learns where the feasible region lies. A bound (``latency_ms <= 5``, ``params < 1e6``,
        ``flops >= 1e6``) gives the signed distance relative to the bound; any other expression 1 or 0."""
        satisfied = bool(self(env))
        if self._bound is not None:
            left, op, right = self._bound
            low, high = (left(env), right(env)) if op in (ast.Lt, ast.LtE) else (right(env), left(env))
            if isinstance(low, (int, float)) and isinstance(high, (int, float)):
                distance = (low - high) / max(abs(high), abs(low), 1e-12)
                return max(distance, 1e-6) if not satisfied else min(distance, 0.0)
        return 0.0 if satisfied else 1.0

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    # An expression is its text: equal texts are equal expressions, and it pickles (to Ray workers, inside a
    # SearchSpace) as its text, compiled again on arrival (the compiled closures themselves do not pickle).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return Expression, (self.text,)

    def _compile(self, node: ast.AST) -> Node:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)):
                raise ExpressionError(f"literal {node.value!r} is not allowed")
            value = node.value
            return lambda env: value
        if isinstance(node, ast.Name):
            name = node.id
            self.names.add(name)

            def lookup(env: Env) -> Any:
                if name not in env:
                    raise UnboundName(name)
                return env[name]

            return lookup
        if isinstance(node, (ast.Tuple, ast.List)):
            items = [self._compile(element) for element in node.elts]
            return lambda env: tuple(item(env) for item in items)
        if isinstance(node, ast.BoolOp):
            parts = [self._compile(value) for value in node.values]
            if isinstance(node.op, ast.And):
                return lambda env: all(part(env) for part in parts)
            return lambda env: any(part(env) for part in parts)
        if isinstance(node, ast.UnaryOp):
            operand = self._compile(node.operand)
            if isinstance(node.op, ast.Not):
                return lambda env: not operand(env)
            if isinstance(node.op, ast.USub):
                return lambda env: -operand(env)
            if isinstance(node.op, ast.UAdd):
                return lambda env: +operand(env)
        if isinstance(node, ast.BinOp):
            left, right = self._compile(node.left), self._compile(node.right)
            if isinstance(node.op, ast.Pow):
                return lambda env: _bounded_power(left(env), right(env))
            binary_op = _BINARY.get(type(node.op))
            if binary_op is not None:
                return lambda env: binary_op(left(env), right(env))
        if isinstance(node, ast.Compare):
            first = self._compile(node.left)
            ops = []
            for op_node, comparator in zip(node.ops, node.comparators):
                op = _COMPARE.get(type(op_node))
                if op is None:
                    raise ExpressionError(f"operator {type(op_node).__name__} is not allowed")
                ops.append((op, self._compile(comparator)))

            def compare(env: Env) -> bool:
                left_value = first(env)
                for op, right in ops:
                    right_value = right(env)
                    if not op(left_value, right_value):
                        return False
                    left_value = right_value
                return True

            return compare
        if isinstance(node, ast.IfExp):
            test, body, orelse = (self._compile(n) for n in (node.test, node.body, node.orelse))
            return lambda env: body(env) if test(env) else orelse(env)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                allowed = ", ".join(sorted(_FUNCTIONS))
                raise ExpressionError(f"only these functions may be called: {allowed}")
            function = _FUNCTIONS[node.func.id]
            args = [self._compile(arg) for arg in node.args]
            return lambda env: function(*(arg(env) for arg in args))
        raise ExpressionError(f"{type(node).__name__} is not allowed in a constraint expression")


def _bounded_power(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, (int, float)) and abs(exponent) > MAX_POWER_EXPONENT:
        raise ExpressionError(f"exponent {exponent} is larger than {MAX_POWER_EXPONENT}")
    return base**exponent
