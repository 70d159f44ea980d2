"""How much of a search's wall time goes to trials: a 16-trial search on 2 CPUs (concurrency 2) whose trials
do a known amount of work (a fixed architecture, the design's default 300 proxy steps, no early stopping).
The steady-state cost per trial is ~0.1 s; what remains is paid once per search (two Ray workers importing
torch + transformers, data preparation, Tune set-up), so shorter trials show a lower efficiency.

``efficiency`` = sum of the trials' own compute seconds / (search wall seconds x concurrency); target >= 0.85.
``per_trial_overhead_s`` = (wall x concurrency - compute) / trials. Ray is started before the clock starts
(a cluster is up before searches are submitted); data preparation, Optuna and Ray scheduling, worker
start-up and result handling are all inside the measured wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from common import record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument(
        "--steps", type=int, default=300, help="proxy steps per trial (the design's default proxy length)"
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="nas-bench-")
    os.environ["NAS_HOME"] = os.path.join(work, "home")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    import optuna

    from nas.controller.cluster import ensure_ray
    from nas.controller.run import run_study
    from nas.space import load_space
    from nas.space.shipped import spaces_dir
    from nas.store.db import optuna_storage

    space = load_space(
        spaces_dir() / "text-mlm-tiny.yaml",
        [
            f"search.trials={args.trials}",
            "search.concurrency=2",
            "search.scheduler=none",
            "search.sampler=random",
            "architecture.block=bert",
            "architecture.num_layers=2",
            "architecture.hidden_size=64",
            "architecture.num_heads=2",
            "architecture.ffn_ratio=4",
            "architecture.activation=gelu",
            f"proxy.steps={args.steps}",
            f"proxy.eval_every={args.steps // 3}",
            "proxy.eval_batches=2",
            "data.max_samples=2000",
        ],
    )
    url = f"sqlite:///{work}/bench.db"
    ensure_ray(num_cpus=2)
    start = time.perf_counter()
    outcome = run_study(space, "search-overhead", url, progress=False)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="search-overhead", storage=optuna_storage(url))
    trials = [t for t in study.trials if "wall_time_s" in t.user_attrs]
    compute = sum(t.user_attrs["wall_time_s"] for t in trials)
    concurrency = space.search.concurrency
    # Where the overhead goes: a trial's span in Optuna (ask -> tell) less its own compute. The first
    # `concurrency` trials also pay for starting a Ray worker and importing torch + transformers in it.
    gaps = sorted(
        ((t.datetime_complete - t.datetime_start).total_seconds() - t.user_attrs["wall_time_s"], t.number)
        for t in trials
    )
    first = [gap for gap, number in gaps if number < concurrency]
    steady = [gap for gap, number in gaps if number >= concurrency]
    record(
        "search_overhead",
        {
            "efficiency": compute / (wall * concurrency),
            "per_trial_overhead_s": (wall * concurrency - compute) / args.trials,
            "wall_s": wall,
            "trial_compute_s": compute,
            "trials": args.trials,
            "concurrency": concurrency,
            "status": outcome.status,
            "mean_trial_s": compute / args.trials,
            "first_trials_overhead_s": sum(first) / len(first),
            "steady_trial_overhead_s": sorted(steady)[len(steady) // 2],
            "outside_trials_s": wall
            - (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds(),
        },
    )


if __name__ == "__main__":
    main()
