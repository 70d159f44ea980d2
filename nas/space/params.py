"""Declarative parameter kinds of a search space and their one converter to Optuna.

A YAML value is either fixed (a scalar or a list) or a distribution:
``{int: [lo, hi]}`` (``step``, ``log``), ``{float: [lo, hi]}`` (``log``, ``step``), ``{choice: [...]}``, or a
conditional mapping ``{option_a: {sub: ...}, option_b: null}`` that picks an option and opens its sub-space.
Optuna parameter names are flat paths: ``num_layers``, ``block/modernbert/local_attention``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

DISTRIBUTION_KEYS = {"int", "float", "choice"}
OPTION_KEYS = {"log", "step"}


class Trial(Protocol):
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class Param:
    """One entry of a space. ``suggest`` writes the sampled value(s) into ``out`` under plain key names."""

    def suggest(self, trial: Trial, name: str, key: str, out: dict[str, Any]) -> None:
        raise NotImplementedError

    def sample_random(self, rng: random.Random, key: str, out: dict[str, Any]) -> None:
        raise NotImplementedError

    def values(self) -> list[Any] | None:
        """Every value the key can take, or None where the range is continuous."""
        raise NotImplementedError

    def size(self) -> float:
        """How many distinct configurations this entry spans (``math.inf`` when continuous)."""
        raise NotImplementedError

    def keys(self, key: str) -> Iterator[tuple[str, Param]]:
        """The (config key, param) pairs this entry can set, itself and its sub-space."""
        yield key, self


@dataclass(frozen=True)
class Fixed(Param):
    value: Any

    def suggest(self, trial, name, key, out):
        out[key] = self.value

    def sample_random(self, rng, key, out):
        out[key] = self.value

    def values(self):
        return [self.value]

    def size(self):
        return 1


@dataclass(frozen=True)
class IntRange(Param):
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial, name, key, out):
        out[key] = trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def sample_random(self, rng, key, out):
        if self.log:
            value = int(round(math.exp(rng.uniform(math.log(self.low), math.log(self.high)))))
            out[key] = min(self.high, max(self.low, value))
        else:
            out[key] = rng.randrange(self.low, self.high + 1, self.step)

    def values(self):
        return list(range(self.low, self.high + 1, self.step))

    def size(self):
        return (self.high - self.low) // self.step + 1


@dataclass(frozen=True)
class FloatRange(Param):
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def suggest(self, trial, name, key, out):
        out[key] = trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def sample_random(self, rng, key, out):
        if self.log:
            out[key] = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            out[key] = rng.uniform(self.low, self.high)

    def values(self):
        return None

    def size(self):
        return math.inf


@dataclass(frozen=True)
class Choice(Param):
    options: tuple[Any, ...]

    def suggest(self, trial, name, key, out):
        out[key] = trial.suggest_categorical(name, list(self.options))

    def sample_random(self, rng, key, out):
        out[key] = rng.choice(self.options)

    def values(self):
        return list(self.options)

    def size(self):
        return len(self.options)


@dataclass(frozen=True)
class Conditional(Param):
    """A choice whose options each open their own sub-space (``block: {bert: {}, modernbert: {...}}``)."""

    branches: dict[str, dict[str, Param]] = field(hash=False)

    def suggest(self, trial, name, key, out):
        option = trial.suggest_categorical(name, list(self.branches))
        out[key] = option
        for sub_key, param in self.branches[option].items():
            param.suggest(trial, f"{name}/{option}/{sub_key}", sub_key, out)

    def sample_random(self, rng, key, out):
        option = rng.choice(list(self.branches))
        out[key] = option
        for sub_key, param in self.branches[option].items():
            param.sample_random(rng, sub_key, out)

    def values(self):
        return list(self.branches)

    def size(self):
        return sum(math.prod(p.size() for p in sub.values()) for sub in self.branches.values())

    def keys(self, key):
        yield key, self
        for sub in self.branches.values():
            for sub_key, param in sub.items():
                yield from param.keys(sub_key)


def parse_param(node: Any, path: str, errors: list[tuple[str, str]]) -> Param | None:
    """Parse one YAML value into a Param; problems are appended to ``errors`` as (yaml path, message)."""
    if not isinstance(node, dict):
        if node is None:
            errors.append((path, "a value is required (got null)"))
            return None
        return Fixed(node)
    if not node:
        errors.append((path, "an empty mapping is neither a value nor a distribution"))
        return None
    kinds = DISTRIBUTION_KEYS & node.keys()
    if not kinds:
        return _parse_conditional(node, path, errors)
    if len(kinds) > 1:
        errors.append((path, f"give one of int/float/choice, not {sorted(kinds)}"))
        return None
    kind = kinds.pop()
    unknown = set(node) - {kind} - OPTION_KEYS
    if kind == "choice":
        unknown |= OPTION_KEYS & node.keys()
    if unknown:
        errors.append((f"{path}.{sorted(unknown)[0]}", f"unknown key for a {kind} distribution"))
        return None
    if kind == "choice":
        options = node["choice"]
        if not isinstance(options, list) or not options:
            errors.append((f"{path}.choice", "choice needs a non-empty list of options"))
            return None
        if any(isinstance(o, (dict, list)) for o in options):
            errors.append(
                (f"{path}.choice", "choice options must be scalars (use a conditional mapping for sub-spaces)")
            )
            return None
        if len(set(map(repr, options))) != len(options):
            errors.append((f"{path}.choice", "choice options must be distinct"))
            return None
        return Choice(tuple(options))
    bounds = node[kind]
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        errors.append(
            (f"{path}.{kind}", f"{kind} needs [low, high] as two {'integers' if kind == 'int' else 'numbers'}")
        )
        return None
    low, high = bounds
    if low > high:
        errors.append((f"{path}.{kind}", f"low {low} is greater than high {high}"))
        return None
    log = node.get("log", False)
    if not isinstance(log, bool):
        errors.append((f"{path}.log", "log must be true or false"))
        return None
    if log and low <= 0:
        errors.append((f"{path}.{kind}", "a log range needs low > 0"))
        return None
    step = node.get("step")
    if step is not None and (not isinstance(step, number) or isinstance(step, bool) or step <= 0):
        errors.append((f"{path}.step", "step must be a positive number"))
        return None
    if step is not None and log:
        errors.append((f"{path}.step", "step and log cannot be combined (Optuna does not support it)"))
        return None
    if kind == "int":
        # For kind == "int" the isinstance check above only admits int steps.
        return IntRange(low, high, step=cast(int, step) or 1, log=log)
    return FloatRange(float(low), float(high), log=log, step=step)


def _parse_conditional(node: dict, path: str, errors: list[tuple[str, str]]) -> Param | None:
    branches: dict[str, dict[str, Param]] = {}
    for option, sub in node.items():
        sub_path = f"{path}.{option}"
        if not isinstance(option, str):
            errors.append((sub_path, "conditional options must be names (strings)"))
            continue
        if sub is None:
            branches[option] = {}
            continue
        if not isinstance(sub, dict):
            errors.append(
                (
                    sub_path,
                    "a conditional option maps to its sub-space (a mapping) or null; "
                    "for a distribution use int/float/choice",
                )
            )
            continue
        branch: dict[str, Param] = {}
        for key, value in sub.items():
            param = parse_param(value, f"{sub_path}.{key}", errors)
            if param is not None:
                branch[str(key)] = param
        branches[option] = branch
    return Conditional(branches) if branches else None
