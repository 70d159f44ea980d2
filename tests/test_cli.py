"""The ``nas`` command as a person runs it: a real process, a real SQLite file, a real local Ray."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SPACES

TINY = [
    "--set",
    "proxy.steps=10",
    "--set",
    "proxy.eval_every=5",
    "--set",
    "proxy.eval_batches=2",
    "--set",
    "data.max_samples=400",
    "--set",
    "data.vocab_size=256",
    "--set",
    "search.concurrency=1",
    "--set",
    "architecture.num_layers=1",
    "--set",
    "architecture.hidden_size={choice: [32, 64]}",
]


def nas(*args: str, cwd: Path, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nas", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ},
        **kwargs,
    )


def test_spaces_validate__prints_ok_for_good_and_every_error_for_bad(tmp_path):
    good = nas("spaces", "validate", str(SPACES / "text-mlm-tiny.yaml"), cwd=tmp_path)
    assert good.returncode == 0 and "OK" in good.stdout
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(
        "name: b\nfamily: transformer\ntask: mlm\ndata: {source: builtin:python-docs}\n"
        "architecture: {num_layers: {int: [4, 2]}, hidden_size: 64, num_heads: 5}\nsearch: {trials: -1}\n"
    )
    bad = nas("spaces", "validate", str(bad_file), cwd=tmp_path)
    assert bad.returncode == 1
    assert "architecture.num_layers.int: low 4 is greater than high 2" in bad.stderr
    assert "search.trials" in bad.stderr
    assert "Traceback" not in bad.stderr
    garbage = tmp_path / "garbage.yaml"
    garbage.write_bytes(b"\x00\xff{{{")
    result = nas("spaces", "validate", str(garbage), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_spaces_list__shows_every_shipped_space_with_its_size(tmp_path):
    result = nas("spaces", "list", cwd=tmp_path)
    assert result.returncode == 0
    for path in SPACES.glob("*.yaml"):
        assert path.stem in result.stdout
    assert "architectures" in result.stdout


@pytest.mark.ray
def test_search__runs_and_studies_show_reads_it_back(tmp_path, nas_home):
    result = nas("search", "text-mlm-tiny", "--trials", "2", "--study-name", "cli-demo", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best architectures" in result.stdout and "val_loss" in result.stdout
    assert (tmp_path / "nas.db").is_file()  # the default database, in the working directory
    assert (nas_home / "cache" / "tokenizers").is_dir() and (nas_home / "ray_results" / "cli-demo").is_dir()
    listing = nas("studies", "list", cwd=tmp_path)
    assert "cli-demo" in listing.stdout and "succeeded" in listing.stdout
    show = nas("studies", "show", "cli-demo", "--plots", str(tmp_path / "plots"), cwd=tmp_path)
    assert show.returncode == 0 and "status    succeeded" in show.stdout
    assert (tmp_path / "plots" / "history.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "loss_vs_flops.html").stat().st_size > 1000 and (
        tmp_path / "plots" / "plotly.min.js"
    ).is_file()
    again = nas("search", "text-mlm-tiny", "--study-name", "cli-demo", *TINY, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    other = nas("search", "text-mlm-tiny", "--warm-start", "cli-demo", *TINY, "--set", "proxy.lr=1.0e-3", cwd=tmp_path)
    assert (
        other.returncode == 1 and "search.warm_start[0]" in other.stderr and "proxy.lr: 0.001 vs 0.003" in other.stderr
    )
    missing = nas("studies", "show", "nope", cwd=tmp_path)
    assert missing.returncode == 1 and "no study named 'nope'" in missing.stderr


def test_search__data_it_cannot_use_is_refused_before_any_study_is_written(tmp_path):
    (tmp_path / "tiny.txt").write_text("hello world\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    for source, message in (
        (tmp_path / "tiny.txt", "validation split need at least 4"),
        (tmp_path / "empty", "every file is empty"),
    ):
        result = nas("search", "text-mlm-tiny", "--set", f"data.source={source}", cwd=tmp_path)
        assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    assert nas("studies", "list", cwd=tmp_path).stdout.strip() == "no studies yet"


@pytest.mark.ray
def test_search__ctrl_c_stops_cleanly_and_marks_the_study_interrupted(tmp_path):
    db = tmp_path / "nas.db"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nas",
            "search",
            "text-mlm-tiny",
            "--trials",
            "20",
            "--study-name",
            "stopme",
            "--no-progress",
            *TINY,
            "--set",
            "proxy.steps=400",
            "--set",
            "proxy.eval_every=100",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if db.is_file():
                try:
                    with sqlite3.connect(db, timeout=5) as connection:
                        running = connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[
                            0
                        ]
                except sqlite3.OperationalError:
                    running = 0
                if running:
                    break
            assert process.poll() is None, process.stdout.read()[-3000:]
            time.sleep(1)
        else:
            pytest.fail("no trial started within 180 s")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode in (0, 130), output[-3000:]
    assert "Traceback" not in output
    with sqlite3.connect(db) as connection:
        status = connection.execute("SELECT status FROM nas_studies WHERE name = 'stopme'").fetchone()[0]
        running = connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0]
        finished = connection.execute("SELECT COUNT(*) FROM trials WHERE state != 'RUNNING'").fetchone()[0]
    assert status == "interrupted"
    assert running == 0
    assert finished < 20
