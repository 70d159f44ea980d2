"""Shared by the benchmark scripts: write results/NAME.json and regenerate the table in README.md."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
sys.path.insert(0, str(REPO))

# What each benchmark's row shows: (headline key, target text).
HEADLINES = {
    "proxy_overhead": ("ratio", ">= 0.95"),
    "search_overhead": ("efficiency", ">= 0.85"),
    "mfu": ("ratio_to_bare", ">= 1.0 (the proxy loop's MFU over the bare transformers loop's, same run)"),
    "api_load": (
        "cpu_ratio_to_healthz",
        "<= 2 (server CPU per request over /healthz's); one client p99 < 50 ms on every read endpoint at 100,000 "
        "trials (solo_worst_p99_ms); 0 errors under 50 clients",
    ),
    "proxy_fidelity": (
        "text-mlm-tiny_kendall_tau",
        "text >= 0.7, above params and zero-cost, compute <= 0.1; vit-mae and cnn-contrastive >= 0.6",
    ),
    "gpu_check": ("mfu", "record (pretraining MFU vs the card's bf16 peak)"),
    "suite_time": ("wall_s", "<= 240 s on 2 CPUs, all passing"),
    "search_efficiency": ("compute_ratio", "<= 0.33 (best method, median of seeds)"),
    "soak": ("lost", "lost = 0, rerun = 0, api_5xx = 0, memory growth < 10%"),
    "vision_throughput": ("worst_ratio", ">= 0.95 each (vit-mae, cnn-contrastive; tiny and small median archs)"),
    "cli_startup": ("slowest_s", "help, validate, studies list (100 studies) each <= 0.5 s"),
}


def fixed_text_candidate(space_name: str, overrides: list[str], lr: float):
    """(space, prepared data, candidate) for a shipped text space whose overrides fix the architecture."""
    import dataclasses
    import random

    from nas.data.prepare import prepare_data
    from nas.space import load_space
    from nas.space.shipped import spaces_dir

    space = load_space(spaces_dir() / f"{space_name}.yaml", overrides)
    data = prepare_data(space.data, "text", space.data_shape.channels)
    candidate = space.sample_random(random.Random(0))
    return space, data, dataclasses.replace(candidate, hyperparameters={**candidate.hyperparameters, "lr": lr})


def bare_mlm_loop(model, train, steps: int, batch_size: int, vocab: int, lr: float) -> float:
    """The plain MLM loop anyone would write over a transformers model, the peer of the proxy loop: random rows,
    15% masking, AdamW, clipping. Returns samples/s."""
    import torch

    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        inputs, labels = bare_mlm_batch(train, batch_size, generator)
        loss = model(input_ids=inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def bare_mlm_batch(train, batch_size: int, generator):
    """(input_ids, labels) of the bare loop: random rows, 15% of the ordinary tokens masked ([MASK] = 4)."""
    import torch

    rows = train[torch.randint(0, train.shape[0], (batch_size,), generator=generator)]
    labels = rows.clone()
    chosen = (torch.rand(rows.shape, generator=generator) < 0.15) & (rows >= 5)
    labels[~chosen] = -100
    return rows.masked_fill(chosen, 4), labels


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def record(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    write_table()
    print(json.dumps(payload, indent=2))
    return path


def write_table() -> None:
    rows = ["| benchmark | headline | value | target | details | measured |", "| --- | --- | --- | --- | --- | --- |"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "benchmark" not in data:
            continue  # e.g. proxy_fidelity_levers.json, which has a table of its own
        key, target = HEADLINES.get(data["benchmark"], ("", ""))
        details = ", ".join(
            f"{k}={_fmt(v)}"
            for k, v in data.items()
            if k not in ("benchmark", "measured_at", "machine", key) and not isinstance(v, (dict, list))
        )
        rows.append(
            f"| {data['benchmark']} | {key} | {_fmt(data.get(key))} | {target} | {details} | {data['measured_at']} |"
        )
    replace_in_readme("results", "\n".join(rows))


def replace_in_readme(marker: str, table: str) -> None:
    """Put ``table`` between ``<!-- MARKER:start -->`` and ``<!-- MARKER:end -->`` in benchmarks/README.md."""
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else ""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in text and end in text:
        text = text[: text.index(start) + len(start)] + "\n" + table + "\n" + text[text.index(end) :]
    else:
        text += f"\n{start}\n{table}\n{end}\n"
    readme.write_text(text)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
