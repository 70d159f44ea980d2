"""Steps per second of the project's proxy loop against a bare hand-written PyTorch loop over the same
transformers model, batch size and data, alternated round by round in one run. JSON key ``ratio``
(project / bare); target >= 0.95.

Both sides time only their training steps (sampling a batch, masking, forward, backward, clip, AdamW), not
set-up or evaluation: the project side reports that as ``throughput``.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from common import bare_mlm_loop, fixed_text_candidate, record

from nas.models import get_family
from nas.proxies.loop import run_proxy

ARCH = [
    "architecture.block=bert",
    "architecture.num_layers=2",
    "architecture.hidden_size=128",
    "architecture.num_heads=4",
    "architecture.ffn_ratio=4",
    "architecture.activation=gelu",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    space, data, candidate = fixed_text_candidate(
        "text-mlm-tiny",
        ARCH
        + [
            f"proxy.steps={args.steps}",
            f"proxy.eval_every={args.steps}",
            "proxy.eval_batches=1",
            f"proxy.batch_size={args.batch_size}",
            "data.max_samples=2000",
        ],
        lr=1e-3,
    )
    family = get_family(space.family)
    project, bare = [], []
    for _ in range(args.rounds):  # alternate, so drift in the machine's speed hits both sides alike
        project.append(run_proxy(space, candidate, data, lambda metrics, model=None: None, seed=0)["throughput"])
        torch.manual_seed(0)
        model = family.build(candidate.architecture, space.data_shape)
        bare.append(bare_mlm_loop(model, data.train, args.steps, args.batch_size, space.data.vocab_size, 1e-3))
    ratio = statistics.median(project) / statistics.median(bare)
    record(
        "proxy_overhead",
        {
            "ratio": ratio,
            "project_samples_per_s": statistics.median(project),
            "bare_samples_per_s": statistics.median(bare),
            "steps": args.steps,
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "seq_len": space.data.seq_len,
            "architecture": candidate.architecture,
            "project_runs": project,
            "bare_runs": bare,
        },
    )


if __name__ == "__main__":
    main()
