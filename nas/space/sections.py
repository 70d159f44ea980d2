"""Typed sections of a space file (data, proxy, search, resources) and their strict parser.

Each section is a frozen dataclass; ``parse_section`` checks every key against the dataclass fields, so an
unknown key or a wrong type is reported with its YAML path instead of surfacing later inside training.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from nas.catalog import ZERO_COST_SCORES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class DataSpec:
    source: str
    seq_len: int = 128
    val_fraction: float = 0.1
    vocab_size: int = 4096
    image_size: int = 16
    channels: int | None = None
    max_samples: int | None = None
    text_field: str = "text"


@dataclass(frozen=True)
class ProxySpec:
    steps: int = 300
    batch_size: int = 32
    eval_every: int = 50
    eval_batches: int = 8
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lr: float = 1.0e-3
    mask_prob: float = 0.15
    temperature: float = 0.2
    knn_k: int = 10
    latency_batch_size: int = 1
    schedule: str = "cosine"  # "cosine" (decay to min_lr_ratio at the end) or "constant" after warm-up
    lr_scaling: str = "none"  # "width": hidden matrices train at lr * lr_base_width / width (muP for Adam)
    lr_base_width: int = 64
    predict: str = "none"  # "power_law": also report predicted_loss, the fitted curve at predict_factor x steps
    predict_factor: float = 10.0


@dataclass(frozen=True)
class PrescreenSpec:
    """Sample ``pool`` candidates, score each at initialisation, train only the best ``keep`` fraction."""

    score: str = "zero_cost_snip"
    pool: int = 200
    keep: float = 0.25


@dataclass(frozen=True)
class SearchSpec:
    trials: int = 8
    sampler: str = "tpe"
    scheduler: str = "asha"
    concurrency: int = 1
    seed: int = 0
    grace_period: int = 1
    reduction_factor: int = 2
    max_failures: int = 0
    max_infeasible: int = 500
    prescreen: PrescreenSpec | None = None
    # Earlier studies of the same space whose finished trials seed this one (copied, not re-run; no budget used).
    warm_start: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResourcesSpec:
    cpu: float = 1.0
    gpu: float = 0.0


SCHEDULES = ("cosine", "constant")
LR_SCALINGS = ("none", "width")
PREDICTORS = ("none", "power_law")

# Keys of ``hyperparameters`` that a trial may search, with the smallest value each may take; each overrides the
# ProxySpec field of the same name (its type and default).
HYPERPARAMETER_MINIMUMS = {
    "lr": 0.0,
    "weight_decay": 0.0,
    "warmup_fraction": 0.0,
    "grad_clip": 0.0,
    "batch_size": 1,
    "temperature": 1.0e-6,
    "mask_prob": 0.0,
}
SEARCHABLE_HYPERPARAMETERS = tuple(HYPERPARAMETER_MINIMUMS)


def full_hyperparameters(proxy: ProxySpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every searchable hyperparameter of a trial: the value it was given, else the proxy's fixed one, typed as
    the proxy's field. A trial, an export's recipe and full pretraining all train with this one dict."""
    return {
        name: type(getattr(proxy, name))(given.get(name, getattr(proxy, name))) for name in SEARCHABLE_HYPERPARAMETERS
    }


T = TypeVar("T", bound="DataclassInstance")


def parse_section(cls: type[T], node: Any, path: str, errors: list[tuple[str, str]]) -> T | None:
    if node is None:
        node = {}
    if not isinstance(node, dict):
        errors.append((path, f"expected a mapping, got {type(node).__name__}"))
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    ok = True
    for key, value in node.items():
        if key not in fields:
            errors.append((f"{path}.{key}", f"unknown key; expected one of {', '.join(fields)}"))
            ok = False
            continue
        nested = _section_type(hints[key])
        if nested is not None and isinstance(value, dict):
            parsed = parse_section(nested, value, f"{path}.{key}", errors)
            ok = ok and parsed is not None
            values[key] = parsed
            continue
        coerced, problem = _coerce(value, hints[key])
        if problem:
            errors.append((f"{path}.{key}", problem))
            ok = False
        else:
            values[key] = coerced
    for name, field in fields.items():
        if name not in values and field.default is dataclasses.MISSING and ok:
            errors.append((f"{path}.{name}", "is required"))
            ok = False
    return cls(**values) if ok else None


def _section_type(hint: Any) -> type | None:
    """The dataclass a field holds (``prescreen: PrescreenSpec | None``), parsed as a section of its own."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next((o for o in options if dataclasses.is_dataclass(o) and isinstance(o, type)), None)


def _coerce(value: Any, hint: Any) -> tuple[Any, str | None]:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        return (None, None) if type(None) in options else (None, "a value is required (got null)")
    for option in options:
        if typing.get_origin(option) is tuple:  # a list of strings (``warm_start``); one string is a list of one
            items = [value] if isinstance(value, str) else value
            if isinstance(items, list) and all(isinstance(item, str) for item in items):
                return tuple(items), None
            return None, f"expected a list of strings, got {value!r}"
        if option is bool and isinstance(value, bool):
            return value, None
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value, None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), None
        if option is float and isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
            return float(value), None  # YAML 1.1 (PyYAML) reads 1e-3 as a string; a person means the number
        if option is str and isinstance(value, str):
            return value, None
    names = " or ".join(o.__name__ for o in options if o is not type(None))
    return None, f"expected {names}, got {value!r}"


SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# Upper bounds: far past any proxy run, low enough that a typo (an extra three zeros) is caught before it allocates.
UPPER_BOUNDS = {
    "data.seq_len": 65_536,
    "data.vocab_size": 1_000_000,
    "data.image_size": 4_096,
    "data.max_samples": 100_000_000,
    "proxy.steps": 1_000_000,
    "proxy.batch_size": 65_536,
    "proxy.eval_batches": 100_000,
    "proxy.knn_k": 10_000,
    "proxy.latency_batch_size": 65_536,
    "proxy.lr": 10.0,
    "resources_per_trial.cpu": 1_024,
    "resources_per_trial.gpu": 64,
}


def check_ranges(
    data: DataSpec | None,
    proxy: ProxySpec | None,
    search: SearchSpec | None,
    resources: ResourcesSpec | None,
    errors: list[tuple[str, str]],
) -> None:
    """Bounds no type can express; each names its YAML path."""

    def need(ok: bool, path: str, message: str) -> None:
        if not ok:
            errors.append((path, message))

    sections = {"data": data, "proxy": proxy, "resources_per_trial": resources}
    for path, high in UPPER_BOUNDS.items():
        section, name = path.split(".")
        value = getattr(sections[section], name, None)
        if isinstance(value, int | float):
            shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
            need(value <= high, path, f"{shown} is over the largest allowed, {high:,}")

    if data:
        need(data.seq_len >= 8, "data.seq_len", "must be at least 8")
        need(0.0 < data.val_fraction <= 0.5, "data.val_fraction", "must lie in (0, 0.5]")
        need(data.vocab_size >= 64, "data.vocab_size", "must be at least 64")
        need(data.image_size >= 4, "data.image_size", "must be at least 4")
        need(data.channels in (None, 1, 3), "data.channels", "must be 1 or 3")
        need(data.max_samples is None or data.max_samples >= 16, "data.max_samples", "must be at least 16")
    if proxy:
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "knn_k", "latency_batch_size"):
            need(getattr(proxy, name) >= 1, f"proxy.{name}", "must be at least 1")
        need(proxy.eval_every <= proxy.steps, "proxy.eval_every", f"is larger than proxy.steps ({proxy.steps})")
        need(0.0 <= proxy.warmup_fraction < 1.0, "proxy.warmup_fraction", "must lie in [0, 1)")
        need(0.0 <= proxy.min_lr_ratio <= 1.0, "proxy.min_lr_ratio", "must lie in [0, 1]")
        need(proxy.lr > 0, "proxy.lr", "must be positive")
        need(0.0 < proxy.mask_prob < 1.0, "proxy.mask_prob", "must lie in (0, 1)")
        need(proxy.temperature > 0, "proxy.temperature", "must be positive")
        need(proxy.schedule in SCHEDULES, "proxy.schedule", f"must be one of {', '.join(SCHEDULES)}")
        need(proxy.lr_scaling in LR_SCALINGS, "proxy.lr_scaling", f"must be one of {', '.join(LR_SCALINGS)}")
        need(proxy.lr_base_width >= 1, "proxy.lr_base_width", "must be at least 1")
        need(proxy.predict in PREDICTORS, "proxy.predict", f"must be one of {', '.join(PREDICTORS)}")
        need(proxy.predict_factor >= 1.0, "proxy.predict_factor", "must be at least 1 (a multiple of proxy.steps)")
    if search:
        need(1 <= search.trials <= 100_000, "search.trials", "must lie in [1, 100000]")
        need(1 <= search.concurrency <= 1024, "search.concurrency", "must lie in [1, 1024]")
        need(search.grace_period >= 1, "search.grace_period", "must be at least 1")
        need(search.reduction_factor >= 2, "search.reduction_factor", "must be at least 2")
        need(search.max_failures >= 0, "search.max_failures", "must be at least 0")
        need(search.max_infeasible >= 1, "search.max_infeasible", "must be at least 1")
        if search.prescreen:
            screen = search.prescreen
            need(
                screen.score in ZERO_COST_SCORES,
                "search.prescreen.score",
                f"unknown score {screen.score!r}; known: {', '.join(ZERO_COST_SCORES)}",
            )
            need(2 <= screen.pool <= 100_000, "search.prescreen.pool", "must lie in [2, 100000]")
            need(0.0 < screen.keep < 1.0, "search.prescreen.keep", "must lie in (0, 1): the fraction trained")
        need(len(search.warm_start) <= 50, "search.warm_start", "at most 50 studies")
        need(len(set(search.warm_start)) == len(search.warm_start), "search.warm_start", "names a study twice")
        need(all(name.strip() for name in search.warm_start), "search.warm_start", "study names must not be empty")
    if resources:
        need(resources.cpu > 0, "resources_per_trial.cpu", "must be positive")
        need(resources.gpu >= 0, "resources_per_trial.gpu", "must be 0 or more")
        need(
            resources.gpu <= 1 or resources.gpu == int(resources.gpu),
            "resources_per_trial.gpu",
            "fractions are for sharing one GPU; above 1 give a whole number",
        )
