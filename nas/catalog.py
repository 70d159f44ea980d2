"""The names a space YAML uses and what each stands for: proxy tasks, samplers, schedulers and data sources.

The bottom layer, so that validating a space needs nothing above it: a name is checked here, and the code it
names (a proxy class, an Optuna sampler, a Ray scheduler) is imported only when a run uses it, from the
``"module:attribute"`` target registered with it. Light on purpose: ``nas spaces validate`` never imports torch,
optuna or ray.
"""

from __future__ import annotations

import glob
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.registry import Registry


def load_target(target: str) -> Any:
    """The object a ``"module:attribute"`` target names, imported now."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


# --- proxy tasks -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    name: str
    data_kind: str  # "text" or "image"
    target: str  # "module:Class" of its nas.proxies.base.Proxy
    description: str


TASKS: Registry[TaskInfo] = Registry("task")
for _task in (
    TaskInfo("mlm", "text", "nas.proxies.mlm:MaskedLanguageModelling", "masked language modelling (BERT)"),
    TaskInfo("mae", "image", "nas.proxies.mae:MaskedAutoencoding", "masked image modelling (MAE)"),
    TaskInfo("contrastive", "image", "nas.proxies.contrastive:ContrastiveLearning", "SimCLR / SimSiam views"),
):
    TASKS.register(_task.name)(_task)


# Zero-cost scores every trial records (nas.proxies.zero_cost; higher is more promising): what
# ``search.prescreen.score`` may name.
ZERO_COST_SCORES = ("zero_cost_snip", "zero_cost_grad_norm")

# --- samplers and schedulers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerInfo:
    name: str
    target: str  # "module:function(seed, multi_objective)" returning an Optuna sampler
    multi_objective: bool  # whether it searches a Pareto front


SAMPLERS: Registry[SamplerInfo] = Registry("sampler")
for _sampler in (
    SamplerInfo("tpe", "nas.controller.samplers:tpe", True),
    SamplerInfo("random", "nas.controller.samplers:random_sampler", True),
    SamplerInfo("gp", "nas.controller.samplers:gp", True),
    SamplerInfo("nsga2", "nas.controller.samplers:nsga2", True),
):
    SAMPLERS.register(_sampler.name)(_sampler)

# "module:function(max_t, grace_period, reduction_factor)" returning a Ray Tune trial scheduler
SCHEDULERS: Registry[str] = Registry("scheduler")
for _name, _target in (
    ("none", "nas.controller.samplers:fifo"),
    ("asha", "nas.controller.samplers:asha"),
    ("hyperband", "nas.controller.samplers:hyperband"),
):
    SCHEDULERS.register(_name)(_target)


# --- data sources ------------------------------------------------------------------------------------------

BUILTIN_PREFIX = "builtin:"
BUILTIN_SOURCES = {"python-docs": "text", "digits": "image"}
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DataError(UserError, ValueError):
    """The data a space points to cannot be used (the message names the file or setting)."""


@dataclass(frozen=True)
class Source:
    spec: str
    kind: str  # "text" | "image"
    builtin: str | None = None
    files: tuple[Path, ...] = ()
    root: Path | None = None  # image folder root (class subfolders give labels)


def resolve_source(spec: str, roots: tuple[Path, ...] | None = None) -> Source:
    """What ``data.source`` names: a built-in corpus (no download) or files the user points to; DataError with a
    message a person can act on. With ``roots`` (a service's ``NAS_DATA_ROOTS``) only the built-ins and files inside
    those folders are allowed, after symbolic links and ``..`` are followed; the file system outside them is not
    looked at, so its answers cannot be used to probe the server."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_SOURCES:
            raise DataError(
                f"unknown built-in data set {name!r}; built-ins: "
                + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SOURCES)
            )
        return Source(spec, BUILTIN_SOURCES[name], builtin=name)
    if roots is not None:
        _check_inside_roots(spec, roots)
    expanded = os.path.expanduser(spec) if roots is None else spec
    path = Path(expanded)
    if path.is_dir():
        images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        texts = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
        if images:
            source = Source(spec, "image", files=tuple(images), root=path)
        elif texts:
            source = Source(spec, "text", files=tuple(texts))
        else:
            raise DataError(f"folder {spec!r} holds no .png/.jpg images and no .txt/.jsonl/.parquet files")
    else:
        matches = (
            sorted(Path(p) for p in glob.glob(expanded, recursive=True))
            if glob.has_magic(expanded)
            else ([path] if path.is_file() else [])
        )
        if not matches:
            raise DataError(f"no file or folder matches {spec!r}")
        unsupported = [p for p in matches if p.suffix.lower() not in TEXT_SUFFIXES]
        if unsupported:
            raise DataError(f"{unsupported[0]} is not a .txt, .jsonl or .parquet file")
        source = Source(spec, "text", files=tuple(matches))
    if roots is not None:
        for file in source.files:
            _check_inside_roots(str(file), roots)  # a link inside a root may point out of it
    if source.kind == "text" and all(file.stat().st_size == 0 for file in source.files):
        raise DataError(f"{spec!r}: every file is empty")
    return source


def _check_inside_roots(spec: str, roots: tuple[Path, ...]) -> None:
    allowed = "the built-in data sets (" + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SOURCES) + ")"
    if not roots:
        raise DataError(f"this service reads only {allowed}; its operator may allow folders in NAS_DATA_ROOTS")
    listed = ", ".join(str(root) for root in roots)
    if not os.path.isabs(spec):
        raise DataError(
            f"{spec!r} must be an absolute path inside one of NAS_DATA_ROOTS ({listed}), or one of {allowed}"
        )
    parts = Path(spec).parts
    fixed = Path(*parts[: next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))])
    real = Path(os.path.realpath(fixed))
    if not any(real == root or root in real.parents for root in roots):
        raise DataError(f"{spec!r} is outside the folders this service may read (NAS_DATA_ROOTS: {listed})")
