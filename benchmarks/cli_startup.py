"""How long the short ``nas`` commands take from process start to exit, beside ``optuna --version`` (the start-up
of the tool a user would otherwise reach for), in one run: the commands alternate, round after round, and each
figure is the median of its rounds.

- ``help_s``: ``nas --help``;
- ``validate_s``: ``nas spaces validate text-mlm-tiny``;
- ``studies_list_s``: ``nas studies list`` on a SQLite file holding 100 studies.

Target (#11): each <= 0.5 s. ``nas studies list`` reads only the service's own table: a current schema costs one
small query, so Optuna and Alembic are never imported on its way (they were 0.4 s of its 0.8 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, record

TARGET_S = 0.5


def seed_database(url: str, studies: int) -> None:
    from nas.space import load_space, shipped_space_path
    from nas.store import create_study_row, upgrade

    upgrade(url)
    space = load_space(shipped_space_path("text-mlm-tiny"))
    for index in range(studies):
        create_study_row(url, f"study-{index:03d}", space, status="succeeded")


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--studies", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nas-cli-"))
    env = {**os.environ, "NAS_HOME": str(work / "home")}
    url = f"sqlite:///{work / 'nas.db'}"
    seed_database(url, args.studies)
    optuna_cli = shutil.which("optuna") or str(Path(sys.executable).parent / "optuna")
    commands = {
        "help_s": [sys.executable, "-m", "nas", "--help"],
        "validate_s": [sys.executable, "-m", "nas", "spaces", "validate", "text-mlm-tiny"],
        "studies_list_s": [sys.executable, "-m", "nas", "studies", "list", "--storage", url],
        "optuna_version_s": [optuna_cli, "--version"],
    }
    times: dict[str, list[float]] = {key: [] for key in commands}
    for command in commands.values():  # one untimed warm-up each: the file cache, .pyc files
        timed(command, REPO, env)
    for _ in range(args.rounds):
        for key, command in commands.items():
            times[key].append(timed(command, REPO, env))
    medians = {key: round(statistics.median(values), 3) for key, values in times.items()}
    ours = ("help_s", "validate_s", "studies_list_s")
    record(
        "cli_startup",
        {
            **medians,
            "slowest_s": max(medians[key] for key in ours),
            "passes": all(medians[key] <= TARGET_S for key in ours),
            **{
                f"{key.removesuffix('_s')}_to_optuna": round(medians[key] / medians["optuna_version_s"], 2)
                for key in ours
            },
            **{f"{key.removesuffix('_s')}_spread_s": round(max(v) - min(v), 3) for key, v in times.items()},
            "rounds": args.rounds,
            "studies": args.studies,
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
