"""Full pretraining of an export on Ray Train: DDP on 2 CPU workers, checkpoints, resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nas.controller import run_study
from nas.export import RECIPE_FILE, ExportError, export_trial, load_trial
from nas.pretrain import PretrainError, latest_complete_checkpoint, run_pretraining
from nas.space import load_space
from tests.conftest import ONE_TINY_TRIAL, SPACES, nas_home_set_to

pytestmark = pytest.mark.ray

TEXT = [
    *ONE_TINY_TRIAL,
    "data.max_samples=300",
    "data.vocab_size=256",
    "architecture.num_layers=1",
    "architecture.hidden_size=32",
    "architecture.block=bert",
    "hyperparameters.lr=3.0e-3",
]


@pytest.fixture(scope="module")
def exported(ray_cluster, tmp_path_factory):
    with nas_home_set_to(tmp_path_factory.mktemp("pretrain_home")) as home:
        url = f"sqlite:///{home / 'nas.db'}"
        assert (
            run_study(load_space(SPACES / "text-mlm-tiny.yaml", TEXT), "pre", url, progress=False).status == "succeeded"
        )
        yield export_trial(load_trial(url, "pre"), home / "export"), home


def edited_copy(folder, copy, **recipe_changes):
    """A copy of an export with its pretraining recipe edited, as a person may."""
    shutil.copytree(folder, copy)
    recipe = yaml.safe_load((copy / RECIPE_FILE).read_text())
    recipe.update(recipe_changes)
    (copy / RECIPE_FILE).write_text(yaml.safe_dump(recipe))
    return copy


def history_of(model_folder) -> list[dict]:
    return json.loads((model_folder / "nas_provenance.json").read_text())["pretraining"]["history"]


def test_pretrain__killed_run_resumes_on_two_workers_lowers_the_loss_and_writes_a_loadable_folder(
    exported, tmp_path, monkeypatch
):
    """One worker is killed -9 after a checkpoint; the run resumes there with DDP on 2 CPU workers."""
    folder, home = exported
    monkeypatch.setenv("NAS_HOME", str(home))
    copy = edited_copy(folder, tmp_path / "export", checkpoint_every=5, log_every=5, max_steps=100_000)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "nas", "pretrain", str(copy), "--out", str(out), "--workers", "1", "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 240
        while not list((out / "ray" / "pretrain").glob("checkpoint_*")):
            assert process.poll() is None, "pretraining stopped before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(1)
        time.sleep(1)  # let the checkpoint finish registering
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    with pytest.raises(PretrainError, match="--resume"):
        run_pretraining(copy, out, max_steps=30, workers=2, progress=False)
    model = run_pretraining(copy, out, max_steps=30, workers=2, resume=True, progress=False)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["resumed_from"] >= 5 and progress["resumed_from"] % 5 == 0
    history = history_of(model)
    assert history[-1]["step"] == 30 and len(history) >= 4
    assert [h["step"] for h in history if h["step"] <= progress["resumed_from"]]  # the history before the kill is kept
    assert history[-1]["loss"] < history[0]["loss"]
    assert (out / "loss_curve.png").stat().st_size > 1000
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    assert AutoModelForMaskedLM.from_pretrained(model).config.num_hidden_layers == 1
    assert AutoTokenizer.from_pretrained(model).mask_token == "[MASK]"


def test_pretrain__resume_starts_from_a_whole_checkpoint_ray_never_registered(exported, tmp_path, monkeypatch):
    """A driver killed between a checkpoint's upload and its registration leaves it on disk only. Removing Ray's
    snapshot file stands in for that moment: --resume must start from the newest whole checkpoint, not step 0,
    and pass over one the kill cut short."""
    folder, home = exported
    monkeypatch.setenv("NAS_HOME", str(home))
    copy = edited_copy(folder, tmp_path / "export", checkpoint_every=5, log_every=5)
    out = tmp_path / "out"
    run_pretraining(copy, out, max_steps=10, workers=1, progress=False)
    run_dir = out / "ray" / "pretrain"
    (run_dir / "checkpoint_manager_snapshot.json").unlink()
    found = latest_complete_checkpoint(run_dir)
    assert found is not None
    newest = Path(found)
    assert json.loads((newest / "state.json").read_text())["step"] == 10
    for name, cut in (("weights.safetensors", "checkpoint_cut_weights"), ("optimizer.pt", "checkpoint_cut_optimizer")):
        shutil.copytree(newest, run_dir / cut)
        (run_dir / cut / "state.json").write_text(json.dumps({"step": 15, "history": []}))
        data = (run_dir / cut / name).read_bytes()
        (run_dir / cut / name).write_bytes(data[: len(data) // 2])
    assert latest_complete_checkpoint(run_dir) == str(newest)
    model = run_pretraining(copy, out, max_steps=15, workers=1, resume=True, progress=False)
    assert json.loads((out / "progress.json").read_text())["resumed_from"] == 10
    assert history_of(model)[-1]["step"] == 15


def test_pretrain__missing_or_foreign_folders_get_clear_errors(tmp_path):
    with pytest.raises(ExportError, match="is not a folder"):
        run_pretraining(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text("{}")
    with pytest.raises(ExportError, match="not an `nas export` folder"):
        run_pretraining(tmp_path / "foreign", tmp_path / "out")
    result = subprocess.run(
        [sys.executable, "-m", "nas", "pretrain", str(tmp_path / "foreign")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "not an `nas export` folder" in result.stderr and "Traceback" not in result.stderr


def test_pretrain__resume_without_a_run_is_refused(exported, tmp_path):
    folder, _ = exported
    with pytest.raises(PretrainError, match="nothing to resume"):
        run_pretraining(folder, tmp_path / "out", resume=True)
