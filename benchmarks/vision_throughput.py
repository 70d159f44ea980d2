"""Samples per second of the vision proxies against a bare PyTorch loop over the same model, batch size, data and
augmentations, alternated round by round in one run: vit-mae (masked image modelling) and cnn-contrastive
(SimCLR views), each at the median architecture of its tiny and small space.

The median architecture is the sample with the median parameter count among 101 random samples of the space
(seed 0): one rule for every space, conditional entries included. Both sides time only their training steps
(drawing a batch, masking or augmenting it, forward, backward, clipping, AdamW); the project side reports that as
``throughput``. The bare contrastive loop calls the same batched augmentation (``random_view``: an affine crop
through one ``grid_sample`` over the batch, jitter and noise as tensor operations) and the same loss (``nt_xent``).

Keys ``<space>_ratio`` (project / bare; for example ``vit_mae_tiny_ratio``), target >= 0.95 each (#11).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from common import record

from nas.catalog import TASKS
from nas.data.prepare import prepare_data
from nas.models import get_family
from nas.proxies.augment import random_view
from nas.proxies.loop import run_proxy
from nas.proxies.losses import nt_xent
from nas.space import load_space
from nas.space.shipped import spaces_dir

# (steps, rounds) per space: a step of vit-mae-small's median architecture (224-pixel images, batch 128) takes
# ~7 s on 2 CPU cores, one of the tiny spaces ~10 ms.
SPACES = {
    "vit-mae-tiny": (40, 5),
    "vit-mae-small": (4, 3),
    "cnn-contrastive-tiny": (40, 5),
    "cnn-contrastive-small": (20, 3),
}


def median_candidate(space, samples: int = 101):
    rng = random.Random(0)
    drawn = []
    while len(drawn) < samples:
        candidate = space.sample_random(rng)
        if not space.feasibility(candidate):
            drawn.append(candidate)
    return sorted(drawn, key=lambda c: c.params.total)[samples // 2]


def bare_mae_step(model, images: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=images).loss  # ViTMAE draws its own random mask


def bare_contrastive_step(model, images: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    _, z1, _ = model(random_view(images, generator))
    _, z2, _ = model(random_view(images, generator))
    return nt_xent(z1, z2, temperature)


def bare_loop(model, task: str, train: torch.Tensor, steps: int, hp: dict) -> float:
    """The loop anyone would write over the same model: random rows, the task's loss, AdamW, clipping."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    batch_size = int(hp["batch_size"])
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        images = train[torch.randint(0, train.shape[0], (batch_size,), generator=generator)]
        if task == "mae":
            loss = bare_mae_step(model, images)
        else:
            loss = bare_contrastive_step(model, images, generator, hp["temperature"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def measure(name: str, steps: int, rounds: int) -> dict:
    space = load_space(
        spaces_dir() / f"{name}.yaml", [f"proxy.steps={steps}", f"proxy.eval_every={steps}", "proxy.eval_batches=1"]
    )
    data = prepare_data(space.data, TASKS.get(space.task).data_kind, space.data_shape.channels)
    candidate = median_candidate(space)
    family = get_family(space.family)
    project, bare = [], []
    for _ in range(rounds):  # alternated, so drift in the machine's speed hits both sides alike
        project.append(run_proxy(space, candidate, data, lambda metrics, model=None: None, seed=0)["throughput"])
        torch.manual_seed(0)
        model = family.build(candidate.architecture, space.data_shape)
        bare.append(bare_loop(model, space.task, data.train, steps, candidate.hyperparameters))
    key = name.replace("-", "_")
    return {
        f"{key}_ratio": statistics.median(project) / statistics.median(bare),
        f"{key}_samples_per_s": statistics.median(project),
        f"{key}_bare_samples_per_s": statistics.median(bare),
        f"{key}_project_runs": project,
        f"{key}_bare_runs": bare,
        f"{key}_params": candidate.params.total,
        f"{key}_batch_size": int(candidate.hyperparameters["batch_size"]),
        f"{key}_architecture": candidate.architecture,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="steps per run for every space (default: the table above)")
    parser.add_argument("--rounds", type=int, help="rounds for every space (default: the table above)")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=list(SPACES))
    args = parser.parse_args()
    results: dict = {}
    for name in args.spaces:
        steps, rounds = SPACES[name]
        results.update(measure(name, args.steps or steps, args.rounds or rounds))
    ratios = [results[f"{name.replace('-', '_')}_ratio"] for name in args.spaces]
    record(
        "vision_throughput",
        {
            "worst_ratio": min(ratios),
            **results,
            "passes": min(ratios) >= 0.95,
            "steps_and_rounds": {
                name: [args.steps or SPACES[name][0], args.rounds or SPACES[name][1]] for name in args.spaces
            },
        },
    )


if __name__ == "__main__":
    main()
