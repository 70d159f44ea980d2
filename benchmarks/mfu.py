"""Model FLOP utilisation of the proxy loop on this machine: achieved training FLOP/s of text-mlm-small's
median architecture over the measured fp32 matmul FLOP/s of the same machine, in one run.

Training FLOPs per step are counted with ``torch.utils.flop_counter`` over one real forward + backward;
the step rate comes from the project's own loop (``run_proxy`` throughput). Keys: ``mfu``,
``achieved_gflops``, ``matmul_gflops``. Beside it, in the same run and alternated round by round, the bare
transformers loop a user would write over the same model and batch (``bare_mfu``; #11: ``ratio_to_bare`` >= 1.0).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import bare_mlm_batch, bare_mlm_loop, fixed_text_candidate, record

from nas.models import get_family
from nas.proxies.loop import build_proxy, run_proxy

# The median of text-mlm-small's ranges: layers 2-12 -> 7, hidden {128..768} -> 384, heads -> 8, ffn -> 3.
MEDIAN = [
    "architecture.block=bert",
    "architecture.num_layers=7",
    "architecture.hidden_size=384",
    "architecture.num_heads=8",
    "architecture.ffn_ratio=3",
    "architecture.activation=gelu",
]


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    space, data, candidate = fixed_text_candidate(
        "text-mlm-small",
        MEDIAN
        + [
            f"proxy.steps={args.steps}",
            f"proxy.eval_every={args.steps}",
            "proxy.eval_batches=1",
            f"proxy.batch_size={args.batch_size}",
            "data.max_samples=3000",
        ],
        lr=3e-4,
    )

    from torch.utils.flop_counter import FlopCounterMode

    model = get_family(space.family).build(candidate.architecture, space.data_shape)
    proxy = build_proxy(space, data, candidate)
    batch = proxy.train_batch(torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        proxy.loss(model, batch).backward()
    flops_per_sample = counter.get_total_flops() / args.batch_size
    # The bare loop's own count: transformers' MLM head projects every position onto the vocabulary, where the
    # proxy's projects only the masked ones, so the same model costs it more per sample.
    inputs, labels = bare_mlm_batch(data.train, args.batch_size, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=inputs, labels=labels).loss.backward()
    bare_flops_per_sample = counter.get_total_flops() / args.batch_size

    family = get_family(space.family)
    peaks, project, bare = [matmul_gflops()], [], []
    for _ in range(args.rounds):  # alternated, so drift in the machine's speed hits both sides alike
        project.append(run_proxy(space, candidate, data, lambda metrics, model=None: None, seed=0)["throughput"])
        torch.manual_seed(0)
        bare_model = family.build(candidate.architecture, space.data_shape)
        bare.append(bare_mlm_loop(bare_model, data.train, args.steps, args.batch_size, space.data.vocab_size, 3e-4))
        peaks.append(matmul_gflops())
    peak = max(peaks)
    throughput, bare_throughput = statistics.median(project), statistics.median(bare)
    achieved = flops_per_sample * throughput / 1e9
    record(
        "mfu",
        {
            "mfu": achieved / peak,
            "bare_mfu": bare_flops_per_sample * bare_throughput / 1e9 / peak,
            "ratio_to_bare": (flops_per_sample * throughput) / (bare_flops_per_sample * bare_throughput),
            "samples_ratio_to_bare": throughput / bare_throughput,
            "bare_samples_per_s": bare_throughput,
            "bare_train_flops_per_sample": bare_flops_per_sample,
            "project_runs": project,
            "bare_runs": bare,
            "rounds": args.rounds,
            "achieved_gflops": achieved,
            "matmul_gflops": peak,
            "train_flops_per_sample": flops_per_sample,
            "samples_per_s": throughput,
            "batch_size": args.batch_size,
            "seq_len": space.data.seq_len,
            "params": candidate.params.total,
            "architecture": candidate.architecture,
        },
    )


if __name__ == "__main__":
    main()
