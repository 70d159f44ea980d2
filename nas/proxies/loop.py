"""The short self-supervised pretraining run that scores one candidate.

The loop is deliberately plain (AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast
on CUDA) so that its steps per second stay within a few percent of a hand-written PyTorch loop
(benchmarks/proxy_overhead.py). Validation loss goes to ``report`` every ``eval_every`` steps; the last
report carries ``completed=True`` and all metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from nas.data.prepare import PreparedData
from nas.models.base import get_family
from nas.proxies.base import Proxy, move
from nas.proxies.metrics import encode, flops_per_sample, inference_latency_ms, knn_accuracy, peak_memory_mb
from nas.proxies.registry import get_proxy
from nas.space.spec import Candidate, SearchSpace

KNN_TRAIN_LIMIT = 2000


class TrialFailure(RuntimeError):
    """The candidate cannot be scored (non-finite loss, out of memory); the study goes on without it."""


def lr_factor(step: int, total: int, warmup_fraction: float, min_ratio: float) -> float:
    warmup = int(total * warmup_fraction)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without decay on biases, norms and embeddings' 1-d params (the usual BERT/GPT grouping)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, fused=decay[0].is_cuda if decay else False)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def build_proxy(space: SearchSpace, data: PreparedData, candidate: Candidate) -> Proxy:
    return get_proxy(space.task)(data, space.data_shape, candidate.hyperparameters, space.proxy.eval_batches, space.proxy.knn_k)


def run_proxy(space: SearchSpace, candidate: Candidate, data: PreparedData, report: Callable[..., None],
              seed: int, device: torch.device | None = None) -> dict[str, Any]:
    """Train ``candidate`` briefly; returns the final metrics (also passed to ``report``).

    ``report(metrics)`` is called every ``eval_every`` steps; the last call is ``report(metrics, model=model)``
    so that the caller can keep the proxy-trained weights.
    """
    device = device or pick_device()
    started = time.perf_counter()
    torch.manual_seed(seed)
    family = get_family(space.family)
    model = family.build(candidate.architecture, space.data_shape).to(device)
    proxy = build_proxy(space, data, candidate)
    hp, spec = candidate.hyperparameters, space.proxy

    example = proxy.example_input(spec.latency_batch_size)
    model.eval()
    costs = {
        "params": candidate.params.total,
        "non_embedding_params": candidate.params.non_embedding,
        "flops": flops_per_sample(model, example),
        "latency_ms": inference_latency_ms(model, example),
    }
    validation = [move(b, device) for b in proxy.validation_batches(space.search.seed)]
    optimizer = make_optimizer(model, hp["lr"], hp["weight_decay"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    generator = torch.Generator().manual_seed(seed)
    train_seconds, samples = 0.0, 0
    metrics: dict[str, Any] = {}
    try:
        for step in range(spec.steps):
            step_start = time.perf_counter()
            model.train()
            factor = lr_factor(step, spec.steps, hp["warmup_fraction"], spec.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = hp["lr"] * factor
            batch = move(proxy.train_batch(generator), device)
            with autocast:
                loss = proxy.loss(model, batch)
            if not torch.isfinite(loss):
                raise TrialFailure(f"training loss became {loss.item()} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
            optimizer.step()
            train_seconds += time.perf_counter() - step_start
            samples += proxy.batch_size
            done = step + 1
            if done % spec.eval_every == 0 or done == spec.steps:
                val_loss = evaluate(model, proxy, validation, autocast)
                if not math.isfinite(val_loss):
                    raise TrialFailure(f"validation loss became {val_loss} at step {done}")
                memory, memory_kind = peak_memory_mb(device)
                metrics = {
                    "val_loss": val_loss, "train_loss": float(loss.item()), "step": done, **costs,
                    "throughput": samples / train_seconds, "peak_memory_mb": memory, "peak_memory_kind": memory_kind,
                    "wall_time_s": time.perf_counter() - started, "completed": done == spec.steps,
                }
                if done == spec.steps:
                    metrics.update(probe(model, proxy, data, device, spec.knn_k))
                    report(metrics, model=model)
                else:
                    report(metrics)
    except torch.OutOfMemoryError as exc:
        raise TrialFailure(f"out of memory on {device}: {str(exc).splitlines()[0]}") from None
    return metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, proxy: Proxy, validation: list[dict[str, torch.Tensor]], autocast) -> float:
    model.eval()
    total = 0.0
    with autocast:
        for batch in validation:
            total += float(proxy.loss(model, batch))
    return total / max(1, len(validation))


@torch.no_grad()
def probe(model: torch.nn.Module, proxy: Proxy, data: PreparedData, device: torch.device, k: int) -> dict[str, float]:
    """kNN accuracy of the frozen features, where the data has labels and the task has features."""
    if data.train_labels is None or data.val_labels is None:
        return {}
    model.eval()
    train_images, train_labels = data.train[:KNN_TRAIN_LIMIT], data.train_labels[:KNN_TRAIN_LIMIT]
    train_features = encode(proxy, model, train_images, device)
    if train_features is None:
        return {}
    val_features = encode(proxy, model, data.val, device)
    return {"knn_accuracy": knn_accuracy(train_features, train_labels, val_features, data.val_labels, k)}
