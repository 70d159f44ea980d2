"""GPU check (run through gpu_check.sh on a machine with a CUDA GPU; it refuses to run without one).

1. A text-mlm-small search of ``--trials`` trials, ``gpu: 0.25`` each, four at a time on one card:
   trials per hour and each trial's peak GPU memory (torch.cuda.max_memory_allocated in the trial).
2. ``nas export`` of the best trial and 200 steps of ``nas pretrain`` on one GPU (bf16 autocast):
   training FLOP/s (FLOPs of one step counted by torch.utils.flop_counter) over the card's bf16 dense peak.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import record

# Dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s), by the name torch reports.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10": 125.0}


def card_peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def measured_bf16_tflops(size: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    torch.mm(a, b)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--proxy-steps", type=int, default=300)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on a GPU machine")
    import optuna

    from nas.controller.cluster import ensure_ray
    from nas.controller.run import run_study
    from nas.export import export_trial, load_trial
    from nas.pretrain import run_pretraining
    from nas.space import load_space
    from nas.space.shipped import spaces_dir
    from nas.store.db import optuna_storage

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    url = f"sqlite:///{work / 'nas.db'}"
    space = load_space(
        spaces_dir() / "text-mlm-small.yaml",
        [
            f"search.trials={args.trials}",
            "search.concurrency=4",
            "search.scheduler=none",
            "objectives=[val_loss]",
            "search.sampler=tpe",
            "resources_per_trial.gpu=0.25",
            "resources_per_trial.cpu=2",
            f"proxy.steps={args.proxy_steps}",
            f"proxy.eval_every={args.proxy_steps // 3}",
            "architecture.num_layers={int: [2, 6]}",
            "constraints=[hidden_size % num_heads == 0, params <= 40_000_000]",
        ],
    )
    ensure_ray()
    start = time.perf_counter()
    outcome = run_study(space, "gpu-check", url, progress=False)
    search_s = time.perf_counter() - start
    study = optuna.load_study(study_name="gpu-check", storage=optuna_storage(url))
    trials = [t for t in study.trials if "peak_memory_mb" in t.user_attrs]
    memory = [round(t.user_attrs["peak_memory_mb"], 1) for t in trials]

    folder = export_trial(load_trial(url, "gpu-check"), work / "export")
    recipe_path = folder / "pretrain.yaml"
    import yaml

    recipe = yaml.safe_load(recipe_path.read_text())
    recipe.update(checkpoint_every=args.pretrain_steps, log_every=20, batch_size=64)
    recipe_path.write_text(yaml.safe_dump(recipe))
    from torch.utils.flop_counter import FlopCounterMode

    from nas.data.prepare import prepare_data
    from nas.export import load_exported_model
    from nas.proxies.registry import get_proxy

    model = load_exported_model(folder, "transformer").cuda()
    data = prepare_data(space.data, "text", 0)
    hp = {
        k: recipe[k]
        for k in ("lr", "weight_decay", "warmup_fraction", "grad_clip", "batch_size", "temperature", "mask_prob")
    }
    proxy = get_proxy("mlm")(data, space.data_shape, hp, 1)
    batch = {k: v.cuda() for k, v in proxy.train_batch(torch.Generator().manual_seed(0)).items()}
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast("cuda", dtype=torch.bfloat16):
        proxy.loss(model, batch).backward()
    flops_per_step = counter.get_total_flops()
    del model
    torch.cuda.empty_cache()

    start = time.perf_counter()
    output = run_pretraining(
        folder, work / "pretrained", max_steps=args.pretrain_steps, workers=1, gpus_per_worker=1, progress=False
    )
    pretrain_s = time.perf_counter() - start
    history = json.loads((output / "nas_provenance.json").read_text())["pretraining"]["history"]
    steady = history[1:] if len(history) > 2 else history
    steps_per_s = (steady[-1]["step"] - steady[0]["step"]) / max(1e-9, steady[-1]["time"] - steady[0]["time"])
    name = torch.cuda.get_device_name(0)
    peak = card_peak_tflops(name)
    achieved = flops_per_step * steps_per_s / 1e12
    record(
        "gpu_check",
        {
            "device": name,
            "search_status": outcome.status,
            "trials": len(trials),
            "search_wall_s": search_s,
            "trials_per_hour": len(trials) / search_s * 3600,
            "per_trial_gpu_memory_mb": memory,
            "max_trial_gpu_memory_mb": max(memory) if memory else None,
            "pretrain_steps": args.pretrain_steps,
            "pretrain_wall_s": pretrain_s,
            "pretrain_steps_per_s": steps_per_s,
            "pretrain_tflops": achieved,
            "card_bf16_peak_tflops": peak,
            "measured_bf16_matmul_tflops": measured_bf16_tflops(),
            "mfu": achieved / peak if peak else None,
            "best_architecture": load_trial(url, "gpu-check").architecture,
        },
    )


if __name__ == "__main__":
    main()
