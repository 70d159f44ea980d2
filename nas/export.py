"""Export a trial as a plain transformers model folder that full pretraining starts from.

The folder holds ``save_pretrained`` output (config.json, model.safetensors), the tokenizer (text) or the
image processor config (images), ``nas_provenance.json`` (where it came from) and ``pretrain.yaml`` (the
recipe ``nas pretrain`` reads). ``AutoModel.from_pretrained(folder)`` loads it without ``nas`` installed.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from nas import __version__
from nas.errors import UserError
from nas.models.base import DataShape, get_family
from nas.space import SpaceError, parse_space
from nas.space.sections import full_hyperparameters
from nas.store.artifacts import fetch_folder, filesystem_for, is_remote, publish_folder
from nas.store.trials import (
    ARCHITECTURE,
    DATA_SHAPE,
    FAMILY,
    HYPERPARAMETERS,
    RAY_TRIAL_ID,
    WEIGHTS_PATH,
    why_not_complete,
)

PROVENANCE_FILE = "nas_provenance.json"
RECIPE_FILE = "pretrain.yaml"


class ExportError(UserError, ValueError):
    """The study, trial or folder cannot be exported (the message says why and what to do)."""


class TrialNotFound(ExportError):
    """The study has no trial of that number."""


@dataclass(frozen=True)
class TrialRecord:
    """What export needs of a trial, read from the database."""

    study: str
    number: int
    state: str
    space_raw: dict[str, Any]
    architecture: dict[str, Any]
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    params: dict[str, Any]
    weights_path: str | None
    tokenizer_dir: str | None
    data_shape: dict[str, Any] | None = None  # what the model was built for, on trials that record it


def load_trial(url: str, study_name: str, number: int | None = None, space_yaml: str | None = None) -> TrialRecord:
    """The given trial, or the study's best (first objective); a clear ExportError otherwise.

    The space comes from ``space_yaml`` (the service passes its study row's copy) or the Optuna study's attrs.
    """
    import optuna
    from optuna.trial import TrialState

    from nas.store.db import optuna_storage

    try:
        study = optuna.load_study(study_name=study_name, storage=optuna_storage(url))
    except KeyError:
        raise ExportError(f"no study named {study_name!r} has trials in this database") from None
    if number is None:
        from nas.store.trials import best_trials

        best = best_trials(study, limit=1)
        if not best:
            raise ExportError(f"study {study_name!r} has no completed trial to export yet")
        trial = best[0]
    else:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not matches:
            raise TrialNotFound(f"study {study_name!r} has no trial {number}")
        trial = matches[0]
        if trial.state != TrialState.COMPLETE:
            why = why_not_complete(trial.user_attrs)
            raise ExportError(
                f"trial {number} of {study_name!r} is {trial.state.name}, not COMPLETE"
                + (f" ({why})" if why else "")
                + "; export a completed trial"
            )
    attrs = trial.user_attrs
    if ARCHITECTURE not in attrs:
        raise ExportError(f"trial {trial.number} of {study_name!r} carries no architecture config")
    space_yaml = space_yaml or study.user_attrs.get("space")
    if not space_yaml:
        raise ExportError(f"study {study_name!r} records no search space: it was not run by nas")
    metrics = {
        k: v
        for k, v in attrs.items()
        if k not in (ARCHITECTURE, HYPERPARAMETERS, FAMILY, DATA_SHAPE, WEIGHTS_PATH, RAY_TRIAL_ID)
    }
    return TrialRecord(
        study_name,
        trial.number,
        trial.state.name,
        yaml.safe_load(space_yaml),
        attrs[ARCHITECTURE],
        attrs.get(HYPERPARAMETERS, {}),
        metrics,
        dict(trial.params),
        attrs.get(WEIGHTS_PATH),
        study.user_attrs.get("tokenizer_dir"),
        attrs.get(DATA_SHAPE),
    )


def export_trial(record: TrialRecord, out: Path, weights: str = "proxy", overwrite: bool = False) -> Path:
    """Write the export folder for ``record``; returns it."""
    import torch

    from nas.models.weights import load_weights

    if weights not in ("proxy", "init"):
        raise ExportError(f"--weights must be proxy or init, not {weights!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty; choose another --out")
    try:
        space = parse_space(record.space_raw, record.study, check_data=False, check_satisfiable=False)
    except SpaceError as error:
        raise ExportError(f"study {record.study!r} records a space that no longer validates: {error}") from None
    family = get_family(space.family)
    torch.manual_seed(space.search.seed)
    try:
        # The data shape the trial recorded; trials stored before records carried it use the space's.
        shape = DataShape(**record.data_shape) if record.data_shape else space.data_shape
        model = family.build(family.resolve(record.architecture), shape)
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(
            f"trial {record.number}'s architecture config cannot be built as a {space.family} model: "
            f"{type(error).__name__}: {error}"
        ) from None
    if weights == "proxy":
        with tempfile.TemporaryDirectory(prefix="nas-weights-") as scratch:
            folder = fetch_folder(record.weights_path, Path(scratch)) if record.weights_path else None
            if folder is None or not folder.is_dir() or not any(folder.iterdir()):
                raise ExportError(
                    f"trial {record.number} has no stored proxy weights ({record.weights_path or 'none recorded'}); "
                    "use --weights init for a fresh initialisation of the same architecture"
                )
            load_weights(model, folder)
    out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    family.save_pretrained(model, out)
    _save_preprocessing(space, record, out)
    (out / PROVENANCE_FILE).write_text(json.dumps(_provenance(space, record, weights), indent=2, default=str) + "\n")
    (out / RECIPE_FILE).write_text(yaml.safe_dump(default_recipe(space, record), sort_keys=False))
    return out


def export_trial_to(record: TrialRecord, location: str, weights: str = "proxy") -> str:
    """``export_trial`` to a local folder or to a storage URI (``s3://bucket/exports/x``), where ``nas pretrain``
    on any machine of the cluster can read it."""
    if not is_remote(location):
        return str(export_trial(record, Path(location), weights=weights))
    import pyarrow.fs

    filesystem, path = filesystem_for(location)
    try:
        taken = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError as error:
        raise ExportError(f"cannot read {location}: {error}") from None
    if taken:
        raise ExportError(f"{location} exists and is not empty; choose another --out")
    with tempfile.TemporaryDirectory(prefix="nas-export-") as scratch:
        return publish_folder(export_trial(record, Path(scratch) / "export", weights=weights), location)


def _save_preprocessing(space, record: TrialRecord, out: Path) -> None:
    if space.task == "mlm":
        with tempfile.TemporaryDirectory(prefix="nas-tokenizer-") as scratch:
            folder = fetch_folder(record.tokenizer_dir, Path(scratch)) if record.tokenizer_dir else None
            if folder is None or not (folder / "tokenizer.json").is_file():
                raise ExportError(
                    f"the study's tokenizer ({record.tokenizer_dir}) is gone from the cache; "
                    "run a search on the same data again to rebuild it"
                )
            for item in folder.iterdir():
                if item.is_file() and not item.name.startswith("."):
                    shutil.copy2(item, out / item.name)
        return
    from transformers import ViTImageProcessor

    channels = space.data_shape.channels
    ViTImageProcessor(
        size={"height": space.data.image_size, "width": space.data.image_size},
        image_mean=[0.5] * channels,
        image_std=[0.5] * channels,
        do_rescale=True,
    ).save_pretrained(out)


def _provenance(space, record: TrialRecord, weights: str) -> dict[str, Any]:
    import optuna
    import torch
    import transformers

    return {
        "study": record.study,
        "trial": record.number,
        "weights": weights,
        "family": space.family,
        "task": space.task,
        "architecture": record.architecture,
        "hyperparameters": record.hyperparameters,
        "params": record.params,
        "metrics": record.metrics,
        "seed": space.search.seed,
        "space": yaml.safe_dump(record.space_raw, sort_keys=False),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "nas": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "optuna": optuna.__version__,
            "python": platform.python_version(),
        },
    }


def default_recipe(space, record: TrialRecord) -> dict[str, Any]:
    """Full pretraining: the proxy's objective and data at full length; a person may edit any of it."""
    from nas.proxies.loop import hidden_lr_scale

    hp = full_hyperparameters(space.proxy, record.hyperparameters)
    return {
        "family": space.family,
        "task": space.task,
        "data": {k: v for k, v in space.raw.get("data", {}).items()},
        "objective": {
            "mlm": "masked language modelling",
            "mae": "masked image modelling",
            "contrastive": f"contrastive ({record.architecture.get('method', 'simclr')})",
        }[space.task],
        "max_steps": max(1000, space.proxy.steps * 20),
        **hp,
        "min_lr_ratio": space.proxy.min_lr_ratio,
        "hidden_lr_scale": hidden_lr_scale(space, record.architecture),  # proxy.lr_scaling's width rule, kept
        "log_every": 50,
        "checkpoint_every": 500,
        "workers": 2,
        "resources_per_worker": {"cpu": 1, "gpu": 0},
        "seed": space.search.seed,
    }


def read_export(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(recipe, provenance) of an export folder; a clear ExportError for a missing or foreign folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; give the --out folder of `nas export`")
    missing = [name for name in ("config.json", PROVENANCE_FILE, RECIPE_FILE) if not (folder / name).is_file()]
    if missing:
        raise ExportError(f"{folder} is not an `nas export` folder (missing {', '.join(missing)})")
    try:
        provenance = json.loads((folder / PROVENANCE_FILE).read_text())
        recipe = yaml.safe_load((folder / RECIPE_FILE).read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ExportError(f"{folder}: cannot read its provenance or recipe ({error})") from None
    if not isinstance(recipe, dict) or not isinstance(provenance, dict) or "space" not in provenance:
        raise ExportError(f"{folder}: {RECIPE_FILE} or {PROVENANCE_FILE} is not what `nas export` writes")
    return recipe, provenance


def load_exported_model(folder: Path, family: str):
    """The trainable model of an export, as its family saved it (nas.models: ModelFamily.load_pretrained)."""
    folder = Path(folder)
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    return get_family(family).load_pretrained(folder, provenance["architecture"])
