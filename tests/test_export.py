"""Export a searched trial as a plain transformers folder; reload it without nas."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nas.controller import run_study
from nas.export import PROVENANCE_FILE, RECIPE_FILE, ExportError, export_trial, load_exported_model, load_trial
from nas.models import get_family
from nas.models.weights import load_weights
from nas.space import load_space
from tests.conftest import ONE_TINY_TRIAL, SPACES, nas_home_set_to

pytestmark = pytest.mark.ray

TINY = ONE_TINY_TRIAL
SEARCHES = {
    "transformer": (
        "text-mlm-tiny",
        TINY
        + [
            "data.max_samples=300",
            "data.vocab_size=256",
            "architecture.num_layers=1",
            "architecture.hidden_size=32",
            "architecture.block=bert",
        ],
    ),
    "vit": ("vit-mae-tiny", TINY + ["architecture.num_layers=1", "architecture.hidden_size=32"]),
    "cnn": ("cnn-contrastive-tiny", TINY + ["architecture.num_stages=1", "architecture.base_width=8"]),
}


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory):
    """One finished one-trial study per family, in one SQLite file."""
    with nas_home_set_to(tmp_path_factory.mktemp("export_home")) as home:
        url = f"sqlite:///{home / 'nas.db'}"
        for family, (space_name, overrides) in SEARCHES.items():
            outcome = run_study(
                load_space(SPACES / f"{space_name}.yaml", overrides), f"export-{family}", url, progress=False
            )
            assert outcome.status == "succeeded"
        yield url, home


def example_input(family: str, folder) -> dict[str, torch.Tensor]:
    config = json.loads((folder / "config.json").read_text())
    if family == "transformer":
        return {"input_ids": torch.randint(5, config["vocab_size"], (2, 16))}
    return {"pixel_values": torch.randn(2, config.get("num_channels", 1), 16, 16)}


@pytest.mark.parametrize("family", sorted(SEARCHES))
def test_export__round_trip_keeps_the_proxy_weights_and_outputs(searched, tmp_path, family, monkeypatch):
    url, home = searched
    monkeypatch.setenv("NAS_HOME", str(home))
    record = load_trial(url, f"export-{family}")
    folder = export_trial(record, tmp_path / "export")
    for name in ("config.json", "model.safetensors", PROVENANCE_FILE, RECIPE_FILE):
        assert (folder / name).is_file(), name
    assert (folder / ("tokenizer.json" if family == "transformer" else "preprocessor_config.json")).is_file()
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert provenance["study"] == f"export-{family}" and provenance["trial"] == record.number
    assert provenance["architecture"] == record.architecture and "torch" in provenance["versions"]

    # The weights in the folder are the trial's proxy-trained weights, not a fresh initialisation.
    space = load_space(SPACES / f"{SEARCHES[family][0]}.yaml", SEARCHES[family][1])
    trained = load_weights(get_family(family).build(record.architecture, space.data_shape), record.weights_path).eval()
    reloaded = load_exported_model(folder, family).eval()
    trained_state, reloaded_state = trained.state_dict(), reloaded.state_dict()
    assert trained_state.keys() == reloaded_state.keys()
    assert all(torch.equal(trained_state[k], reloaded_state[k]) for k in trained_state)
    fresh = get_family(family).build(record.architecture, space.data_shape).state_dict()
    assert any(not torch.equal(fresh[k], trained_state[k]) for k in fresh if fresh[k].dtype.is_floating_point)
    inputs = example_input(family, folder)
    with torch.no_grad():
        if family == "vit":
            noise = torch.rand(2, (16 // trained.config.patch_size) ** 2)
            a, b = trained(**inputs, noise=noise).logits, reloaded(**inputs, noise=noise).logits
        elif family == "cnn":
            a, b = trained(inputs["pixel_values"])[1], reloaded(inputs["pixel_values"])[1]
        else:
            a, b = trained(**inputs).logits, reloaded(**inputs).logits
    assert torch.allclose(a, b)


LOADER = """
import json, sys
from transformers import AutoConfig, AutoModel
folder, family = sys.argv[1], sys.argv[2]
config = AutoConfig.from_pretrained(folder)
model = AutoModel.from_pretrained(folder)
if family == "transformer":
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    task = AutoModelForMaskedLM.from_pretrained(folder)
    tokens = AutoTokenizer.from_pretrained(folder)("def f(x): return x")["input_ids"]
    assert len(tokens) > 3
elif family == "vit":
    from transformers import AutoImageProcessor, ViTMAEForPreTraining
    task = ViTMAEForPreTraining.from_pretrained(folder)
    AutoImageProcessor.from_pretrained(folder)
else:
    task = model
assert "nas" not in sys.modules
print(json.dumps({"model_type": config.model_type, "model": type(model).__name__, "task": type(task).__name__}))
"""


@pytest.mark.parametrize("family", sorted(SEARCHES))
def test_export__loads_in_a_fresh_process_that_never_imports_nas(searched, tmp_path, family, monkeypatch):
    url, home = searched
    monkeypatch.setenv("NAS_HOME", str(home))
    folder = export_trial(load_trial(url, f"export-{family}"), tmp_path / "export")
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), family], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {
        "transformer": [("bert", "BertForMaskedLM")],
        "vit": [("vit_mae", "ViTMAEForPreTraining")],
        "cnn": [("resnet", "ResNetModel"), ("convnext", "ConvNextModel")],
    }[family]
    assert (loaded["model_type"], loaded["task"]) in expected


def test_export__init_weights_differ_from_proxy_weights(searched, tmp_path, monkeypatch):
    url, home = searched
    monkeypatch.setenv("NAS_HOME", str(home))
    record = load_trial(url, "export-transformer")
    proxy = load_exported_model(export_trial(record, tmp_path / "proxy"), "transformer").state_dict()
    init = load_exported_model(export_trial(record, tmp_path / "init", weights="init"), "transformer").state_dict()
    assert any(not torch.equal(proxy[k], init[k]) for k in proxy)


def test_export__bad_requests_get_clear_errors(searched, tmp_path, monkeypatch):
    url, home = searched
    monkeypatch.setenv("NAS_HOME", str(home))
    with pytest.raises(ExportError, match="no study named 'nope'"):
        load_trial(url, "nope")
    with pytest.raises(ExportError, match="has no trial 99"):
        load_trial(url, "export-vit", 99)
    folder = export_trial(load_trial(url, "export-vit"), tmp_path / "a")
    with pytest.raises(ExportError, match="not empty"):
        export_trial(load_trial(url, "export-vit"), folder)
    import optuna

    from nas.store.db import optuna_storage

    study = optuna.load_study(study_name="export-vit", storage=optuna_storage(url))
    study.add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "loss became nan"})
    )
    failed = study.trials[-1].number
    with pytest.raises(ExportError, match=rf"trial {failed} of 'export-vit' is FAIL, not COMPLETE \(loss became nan\)"):
        load_trial(url, "export-vit", failed)
    result = subprocess.run(
        [sys.executable, "-m", "nas", "export", "nope", "--out", str(tmp_path / "b"), "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "no study named 'nope'" in result.stderr and "Traceback" not in result.stderr
