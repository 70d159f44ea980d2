"""Zero-cost scores: how promising a candidate looks at initialisation, from one forward and backward pass.

Computed on the trial's own model and a real batch (the study's first validation batch, so every trial of a
study is scored on the same data), on a copy of the model so training starts from untouched weights. They
cost milliseconds and serve as the free baseline a proxy must beat (benchmarks/proxy_fidelity.py, `nas audit`).
Higher means more promising.

- ``grad_norm``: the sum over parameter tensors of the gradient's L2 norm (Abdelfattah et al., 2021,
  "Zero-Cost Proxies for Lightweight NAS").
- ``snip``: the summed connection sensitivity ``|w * dL/dw|`` (Lee et al., 2019, "SNIP: Single-shot Network
  Pruning based on Connection Sensitivity").
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch


def zero_cost_scores(model: torch.nn.Module, proxy: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """``zero_cost_<name>`` for every score, plus ``zero_cost_ms`` (their combined wall time)."""
    started = time.perf_counter()
    clone = copy.deepcopy(model)
    clone.train()
    device = next(clone.parameters()).device
    trainable = [p for p in clone.parameters() if p.requires_grad]
    # The same dropout draws for every trial, without touching the generators the training run goes on to use.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.random.default_generator.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.manual_seed(0)  # the current device only: the one forked above
        loss = proxy.loss(clone, batch)
        grads = torch.autograd.grad(loss, trainable, allow_unused=True)
    grad_norm = snip = 0.0
    for parameter, grad in zip(trainable, grads):
        if grad is None:
            continue
        grad_norm += float(grad.float().norm())
        snip += float((parameter.detach() * grad).abs().sum())
    return {
        "zero_cost_grad_norm": grad_norm,
        "zero_cost_snip": snip,
        "zero_cost_ms": (time.perf_counter() - started) * 1000,
    }
