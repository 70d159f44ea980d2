"""Cost and quality figures measured on every trial: latency, peak memory, kNN probe accuracy (FLOPs are counted
by the model family)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F


def inference_latency_ms(model: torch.nn.Module, inputs: dict[str, torch.Tensor], repeats: int = 5) -> float:
    """Median wall time of a forward pass after one warm-up (synchronised on CUDA)."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    timings = []
    with torch.no_grad():
        for index in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(**inputs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index:
                timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak CUDA allocation of this process, or (on CPU) the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (rss / 2**20 if sys.platform == "darwin" else rss / 1024), "cpu_rss"


@torch.no_grad()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    k: int,
) -> float:
    """Cosine-similarity kNN probe with similarity-weighted votes (Wu et al., 2018; as in DINO's eval)."""
    train_features = F.normalize(train_features.float(), dim=1)
    val_features = F.normalize(val_features.float(), dim=1)
    k = min(k, train_features.shape[0])
    similarity = val_features @ train_features.t()
    weights, index = similarity.topk(k, dim=1)
    classes = int(max(train_labels.max(), val_labels.max())) + 1
    votes = torch.zeros(val_features.shape[0], classes, device=val_features.device)
    votes.scatter_add_(1, train_labels.to(val_features.device)[index], (weights / 0.07).exp())
    return float((votes.argmax(dim=1) == val_labels.to(votes.device)).float().mean())


def encode(
    proxy: Any, model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    chunks = [
        proxy.features(model, images[i : i + batch_size].to(device)) for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks)
