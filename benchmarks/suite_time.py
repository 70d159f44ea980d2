"""The test suite's wall time as CI runs it (README command 2's pytest part), and how busy the CPUs were.

Run from the repository root with nothing else on the machine: the suite is CPU-bound, so anything beside it
slows it. ``--serial`` first runs the same tests in one process, side by side in the same run, for the ratio.
Target (#8): 240 s or less on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from common import record

REPO = Path(__file__).resolve().parents[1]
PARALLEL = ["-n", "2", "--dist", "loadscope", "--no-loadscope-reorder"]  # as in README command 2 and .ci/run


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run_suite(extra: list[str]) -> dict:
    busy_before, total_before = cpu_times()
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    busy_after, total_after = cpu_times()
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error)", summary)}
    return {
        "wall_s": wall,
        "cpu_busy": (busy_after - busy_before) / max(total_after - total_before, 1),
        "passed": counts.get("passed", 0),
        "failed": counts.get("failed", 0) + counts.get("error", 0),
        "exit_code": result.returncode,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serial", action="store_true", help="also run the suite in one process, for the ratio")
    args = parser.parse_args()
    serial = run_suite([]) if args.serial else None
    parallel = run_suite(PARALLEL)
    payload = {
        "wall_s": parallel["wall_s"],
        "command": "python -m pytest " + " ".join(PARALLEL),
        **{f"parallel_{k}": v for k, v in parallel.items() if k != "wall_s"},
        "passes": parallel["wall_s"] <= 240 and parallel["failed"] == 0 and parallel["exit_code"] == 0,
    }
    if serial:
        payload.update({f"serial_{k}": v for k, v in serial.items()})
        payload["speedup"] = serial["wall_s"] / parallel["wall_s"]
    record("suite_time", payload)


if __name__ == "__main__":
    main()
