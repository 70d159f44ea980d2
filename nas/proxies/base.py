"""The contract of a proxy task: how to draw a training batch, how to score a batch, what validation is.

A proxy composes small parts (masking or augmentation, a loss, a head); the training loop that drives it
lives in nas.proxies.loop and is the same for every task.
"""

from __future__ import annotations

from typing import Any

import torch

from nas.data.prepare import PreparedData
from nas.models.base import DataShape


class Proxy:
    task: str = ""

    def __init__(
        self, data: PreparedData, shape: DataShape, hyperparameters: dict[str, Any], eval_batches: int, knn_k: int = 10
    ):
        self.data = data
        self.shape = shape
        self.hp = hyperparameters
        self.batch_size = int(hyperparameters["batch_size"])
        self.eval_batches = eval_batches
        self.knn_k = knn_k

    def train_batch(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A random training batch drawn with ``generator`` (seeded per trial)."""
        raise NotImplementedError

    def validation_batches(self, study_seed: int) -> list[dict[str, torch.Tensor]]:
        """The fixed validation batches: identical for every trial of a study (masks, views, noise included)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def example_input(self, batch_size: int) -> dict[str, torch.Tensor]:
        """A batch for FLOP counting and latency: ``model(**example_input(n))`` runs inference."""
        raise NotImplementedError

    def features(self, model: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor | None:
        """Pooled representations for the kNN probe; None where the task has no probe."""
        return None

    def sample_rows(self, source: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, source.shape[0], (self.batch_size,), generator=generator)
        return source[index]

    def fixed_rows(self) -> list[torch.Tensor]:
        """Validation rows cut into at most ``eval_batches`` batches, in a fixed order."""
        val = self.data.val
        limit = min(val.shape[0], self.eval_batches * self.batch_size)
        return [val[start : start + self.batch_size] for start in range(0, limit, self.batch_size)]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself, also when DDP wraps it (full pretraining): its config and attributes live there."""
    return getattr(model, "module", model)


def move(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}
