"""Proxy tasks by the names the YAML uses. Modules are imported on first use so that validating a space
(or ``nas --help``) never imports torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from nas.registry import Registry


@dataclass(frozen=True)
class TaskInfo:
    name: str
    data_kind: str  # "text" or "image"
    target: str  # "module:Class"
    description: str


TASKS: Registry[TaskInfo] = Registry("task")

for _info in (
    TaskInfo("mlm", "text", "nas.proxies.mlm:MaskedLanguageModelling", "masked language modelling (BERT)"),
    TaskInfo("mae", "image", "nas.proxies.mae:MaskedAutoencoding", "masked image modelling (MAE)"),
    TaskInfo("contrastive", "image", "nas.proxies.contrastive:ContrastiveLearning", "SimCLR / SimSiam views"),
):
    TASKS.register(_info.name)(_info)


def get_proxy(name: str):
    """The proxy class registered under ``name``."""
    module, _, cls = TASKS.get(name).target.partition(":")
    return getattr(importlib.import_module(module), cls)
