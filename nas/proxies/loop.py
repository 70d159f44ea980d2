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
from nas.proxies.curves import predict_loss
from nas.proxies.metrics import encode, inference_latency_ms, knn_accuracy, peak_memory_mb
from nas.proxies.registry import get_proxy
from nas.proxies.zero_cost import zero_cost_scores
from nas.space.spec import Candidate, SearchSpace

KNN_TRAIN_LIMIT = 2000


class TrialFailure(RuntimeError):
    """The candidate cannot be scored (non-finite loss, out of memory); the study goes on without it."""


def lr_factor(step: int, total: int, warmup_fraction: float, min_ratio: float, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` at ``total`` ("cosine") or a flat rate ("constant":
    a short run ends at the peak rate, where a longer run still is at that step, instead of annealing to zero and
    scoring a finish the longer run reaches only at its end). Warm-up is a fraction of ``total``, so a run ``k``
    times longer also warms up ``k`` times longer: the short run is not an exact prefix of it."""
    warmup = int(total * warmup_fraction)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, hidden_lr_scale: float = 1.0
) -> torch.optim.Optimizer:
    """AdamW without decay on biases, norms and embeddings' 1-d params (the usual BERT/GPT grouping).

    ``hidden_lr_scale`` multiplies the rate of the hidden weight matrices (every matrix or kernel except the
    embedding tables): the width rule of muP for Adam (Yang et al., 2022, "Tensor Programs V"), so that one
    ``lr`` suits narrow and wide candidates alike. Each group keeps its multiplier as ``lr_scale``.
    """
    embeddings = {
        id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding) for p in module.parameters()
    }
    hidden: list[torch.nn.Parameter] = []
    tables: list[torch.nn.Parameter] = []
    vectors: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2:
            vectors.append(parameter)
        else:
            (tables if id(parameter) in embeddings else hidden).append(parameter)
    groups: list[dict[str, Any]] = [
        {"params": hidden, "weight_decay": weight_decay, "lr_scale": hidden_lr_scale},
        {"params": tables, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": vectors, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    groups = [group for group in groups if group["params"]]
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    fused = bool(hidden or tables) and (hidden or tables)[0].is_cuda
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def hidden_lr_scale(space: SearchSpace, architecture: dict[str, Any]) -> float:
    """``lr_base_width / width`` under ``proxy.lr_scaling: width``, else 1."""
    if space.proxy.lr_scaling != "width":
        return 1.0
    return space.proxy.lr_base_width / get_family(space.family).width(architecture)


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast_for(device: torch.device):
    """bfloat16 autocast on a GPU; full precision on the CPU (where bfloat16 matmuls are slow)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def train_step(
    model: torch.nn.Module,
    proxy: Proxy,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    lr: float,
    grad_clip: float,
    autocast: Any,
    step: int,
) -> torch.Tensor:
    """One optimisation step, the same in a proxy run and in full pretraining: rate, forward, backward, clipping,
    update. A non-finite loss stops before it reaches the weights (TrialFailure); returns the loss."""
    model.train()
    set_lr(optimizer, lr)
    with autocast:
        loss = proxy.loss(model, batch)
    if not torch.isfinite(loss):
        raise TrialFailure(f"training loss became {loss.item()} at step {step + 1}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


def worst_objectives(space: SearchSpace) -> dict[str, float]:
    """The worst value of every objective: what a trial that never trained reports, as Ray Tune wants every
    objective in each result (the searcher stores no non-finite figure)."""
    return {
        name: math.inf if direction == "minimize" else -math.inf
        for name, direction in zip(space.objectives, space.directions)
    }


def initialise(
    space: SearchSpace, candidate: Candidate, data: PreparedData, seed: int, device: torch.device
) -> tuple[torch.nn.Module, Proxy, list[dict[str, torch.Tensor]]]:
    """A trial's starting point: the model at the seed's initialisation, its proxy and the study's fixed
    validation batches. One place, so that a pre-screen's scores are the ones the trial itself records."""
    torch.manual_seed(seed)
    model = get_family(space.family).build(candidate.architecture, space.data_shape).to(device)
    proxy = build_proxy(space, data, candidate)
    return model, proxy, [move(b, device) for b in proxy.validation_batches(space.search.seed)]


def scores_at_init(
    space: SearchSpace, candidate: Candidate, data: PreparedData, seed: int, device: torch.device | None = None
) -> dict[str, float]:
    """The zero-cost scores ``run_proxy`` records for ``candidate``, without training it: what
    ``search.prescreen`` ranks a pool of samples by."""
    model, proxy, validation = initialise(space, candidate, data, seed, device or torch.device("cpu"))
    return zero_cost_scores(model, proxy, validation[0])


def build_proxy(space: SearchSpace, data: PreparedData, candidate: Candidate) -> Proxy:
    return get_proxy(space.task)(
        data, space.data_shape, candidate.hyperparameters, space.proxy.eval_batches, space.proxy.knn_k
    )


def run_proxy(
    space: SearchSpace,
    candidate: Candidate,
    data: PreparedData,
    report: Callable[..., None],
    seed: int,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train ``candidate`` briefly; returns the final metrics (also passed to ``report``).

    ``report(metrics)`` is called every ``eval_every`` steps; the last call is ``report(metrics, model=model)``
    so that the caller can keep the proxy-trained weights.
    """
    device = device or pick_device()
    started = time.perf_counter()
    family = get_family(space.family)
    model, proxy, validation = initialise(space, candidate, data, seed, device)
    hp, spec = candidate.hyperparameters, space.proxy
    example = proxy.example_input(spec.latency_batch_size)
    costs: dict[str, float] = {
        "params": candidate.params.total,
        "non_embedding_params": candidate.params.non_embedding,
        **zero_cost_scores(model, proxy, validation[0]),
    }
    model.eval()
    # Counted, not measured: a counter misses attention where SDPA runs fused (CPU), so it differs by device.
    costs["flops"] = candidate.flops or family.count_flops(candidate.architecture, space.data_shape)
    costs["latency_ms"] = inference_latency_ms(model, example)
    broken = space.measured_problems(candidate, {"latency_ms": costs["latency_ms"]})
    if broken:  # a hard limit on a measured figure: the trial ends here, before any training
        ended: dict[str, Any] = {**worst_objectives(space), **costs, "step": 0, "completed": False}
        ended["constraint_violation"] = "; ".join(f"{path}: {message}" for path, message in broken)
        report(ended)
        return ended
    optimizer = make_optimizer(model, hp["lr"], hp["weight_decay"], hidden_lr_scale(space, candidate.architecture))
    autocast = autocast_for(device)
    generator = torch.Generator().manual_seed(seed)
    curve = LossCurve(spec, hp["warmup_fraction"])
    train_seconds, samples = 0.0, 0
    metrics: dict[str, Any] = {}
    try:
        for step in range(spec.steps):
            step_start = time.perf_counter()
            lr = hp["lr"] * lr_factor(step, spec.steps, hp["warmup_fraction"], spec.min_lr_ratio, spec.schedule)
            batch = move(proxy.train_batch(generator), device)
            loss = train_step(model, proxy, optimizer, batch, lr, hp["grad_clip"], autocast, step)
            train_seconds += time.perf_counter() - step_start
            samples += proxy.batch_size
            done = step + 1
            curve.add_train(done, loss)
            if done % spec.eval_every == 0 or done == spec.steps:
                val_loss = evaluate(model, proxy, validation, autocast)
                if not math.isfinite(val_loss):
                    raise TrialFailure(f"validation loss became {val_loss} at step {done}")
                curve.add(done, val_loss)
                memory, memory_kind = peak_memory_mb(device)
                metrics = {
                    "val_loss": val_loss,
                    **curve.prediction(),
                    "train_loss": float(loss.item()),
                    "step": done,
                    **costs,
                    "throughput": samples / train_seconds,
                    "peak_memory_mb": memory,
                    "peak_memory_kind": memory_kind,
                    "wall_time_s": time.perf_counter() - started,
                    "completed": done == spec.steps,
                }
                if done == spec.steps:
                    metrics["val_curve"] = curve.points
                    metrics["train_curve"] = curve.train_points
                    metrics.update(probe(model, proxy, data, device, spec.knn_k))
                    report(metrics, model=model)
                else:
                    report(metrics)
    except torch.OutOfMemoryError as exc:
        raise TrialFailure(f"out of memory on {device}: {str(exc).splitlines()[0]}") from None
    return metrics


class LossCurve:
    """The validation losses of one run and, under ``proxy.predict: power_law``, the loss the fitted curve
    predicts at ``predict_factor`` times the run's length (points inside the warm-up are left out of the fit)."""

    TRAIN_BINS = 24

    def __init__(self, spec: Any, warmup_fraction: float):
        self.spec = spec
        self.first_step = int(spec.steps * warmup_fraction)
        self.points: list[list[float]] = []
        self.train_points: list[list[float]] = []
        self._bin = max(1, spec.steps // self.TRAIN_BINS)
        self._losses: list[torch.Tensor] = []

    def add(self, step: int, loss: float) -> None:
        self.points.append([step, loss])

    def add_train(self, step: int, loss: torch.Tensor) -> None:
        """Training losses averaged over bins of steps: a curve that costs no extra forward pass."""
        self._losses.append(loss.detach())
        if step % self._bin == 0 or step == self.spec.steps:
            self.train_points.append([step, float(torch.stack(self._losses).mean())])
            self._losses = []

    def prediction(self) -> dict[str, float]:
        if self.spec.predict == "none":
            return {}
        fitted = [(step, loss) for step, loss in self.points if step > self.first_step]
        predicted = predict_loss(
            [s for s, _ in fitted], [v for _, v in fitted], self.spec.steps * self.spec.predict_factor
        )
        # Until there are enough points to fit, the last loss stands in (every trial is at the same step then).
        return {"predicted_loss": predicted if predicted is not None else self.points[-1][1]}


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
