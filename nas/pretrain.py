"""Full self-supervised pretraining of an exported model on Ray Train (``TorchTrainer``, DDP).

The same objective as the proxy, at full length: gloo on CPU, NCCL and bf16 autocast on GPU. Rank 0 writes a
checkpoint (weights, optimizer, step, loss history) every ``checkpoint_every`` steps to the run's storage: the
output folder on one machine, or ``NAS_STORAGE_URI`` (a shared folder or an object store) when set, since on a
cluster rank 0 may run on any node. ``--resume`` with the same output folder continues from the latest one: the
folder's run.json says where the run's checkpoints are, and ``latest_complete_checkpoint`` finds one Ray had not
registered yet (a driver killed between a checkpoint's upload and its registration must not send the run back to
step 0). The workers get the export and the data through Ray's object store, and report progress to a small actor
the driver reads, so no worker needs the driver's disk. The result is a save_pretrained folder plus the loss curve.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nas.catalog import TASKS
from nas.export import PROVENANCE_FILE, ExportError, load_exported_model, read_export
from nas.models.base import get_family
from nas.proxies.registry import get_proxy
from nas.space import SpaceError, apply_overrides, parse_space
from nas.space.sections import SEARCHABLE_HYPERPARAMETERS
from nas.store.artifacts import STORAGE_URI_ENV, fetch_folder, ray_storage, storage_location

if TYPE_CHECKING:
    import pyarrow.fs

RUN_NAME = "pretrain"  # the run's name when its checkpoints stay in the output folder (out/ray/pretrain)
RUN_FILE = "run.json"  # in the output folder: where the run's checkpoints are
PROGRESS_FILE = "progress.json"
STATE_FILE = "state.json"  # in each checkpoint, beside the weights: the step and the loss history
OPTIMIZER_FILE = "optimizer.pt"


class PretrainError(ExportError):
    """Full pretraining cannot start or continue (the message says what to do)."""


def run_pretraining(
    folder: Path | str,
    out: Path,
    data_source: str | None = None,
    max_steps: int | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Pretrain the export in ``folder`` (a path or a storage URI); writes ``out/model`` (save_pretrained) and
    ``out/loss_curve.png``."""
    with tempfile.TemporaryDirectory(prefix="nas-export-") as scratch:
        local = fetch_folder(str(folder), Path(scratch) / "export")
        return _pretrain(
            local.resolve(), Path(out).resolve(), data_source, max_steps, workers, gpus_per_worker, resume, progress
        )


def _pretrain(
    folder: Path,
    out: Path,
    data_source: str | None,
    max_steps: int | None,
    workers: int | None,
    gpus_per_worker: float | None,
    resume: bool,
    progress: bool,
) -> Path:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from nas.controller.cluster import ensure_ray
    from nas.data.prepare import prepare_data

    recipe, provenance = read_export(folder)
    run = _RunLocation.for_output(out, resume)
    recipe = {**recipe, **{k: v for k, v in {"max_steps": max_steps, "workers": workers}.items() if v is not None}}
    resources = dict(recipe.get("resources_per_worker") or {"cpu": 1, "gpu": 0})
    if gpus_per_worker is not None:
        resources["gpu"] = gpus_per_worker
    if int(recipe["max_steps"]) < 1 or int(recipe["workers"]) < 1:
        raise PretrainError("max_steps and workers must be at least 1")

    raw = yaml.safe_load(provenance["space"])
    if data_source:
        raw = apply_overrides(raw, {"data.source": data_source})
    try:
        space = parse_space(raw, str(folder), check_data=True, check_satisfiable=False)
    except SpaceError as error:
        raise PretrainError(f"the recipe's data is not usable: {error}") from None
    # Text is encoded with the export's own tokenizer: the embeddings learned its ids, whatever the corpus.
    tokenizer = folder if (folder / "tokenizer.json").is_file() else None
    data = prepare_data(
        space.data, TASKS.get(space.task).data_kind, space.data_shape.channels, space.search.seed, tokenizer
    )

    out.mkdir(parents=True, exist_ok=True)
    run.save(out)
    ensure_ray()
    board = ray.remote(num_cpus=0)(ProgressBoard).remote()
    config = {
        "export_files": ray.put({item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}),
        "space": space,  # validated here; the workers get it pickled, never parse it again
        "recipe": recipe,
        "data": ray.put(data),
        "progress": board,
        "filesystem": run.filesystem,
        "resume_from": (run.latest_checkpoint() or "") if resume else "",
    }
    use_gpu = float(resources.get("gpu", 0)) > 0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=int(recipe["workers"]),
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": float(resources.get("cpu", 1)),
                **({"GPU": float(resources["gpu"])} if use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=run.storage_path,
            storage_filesystem=run.filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    watcher = _ProgressWatcher(board, out / PROGRESS_FILE, int(recipe["max_steps"]), show_bar=progress)
    watcher.start()
    try:
        result = trainer.fit()
    finally:
        watcher.stop()
    if result.checkpoint is None:
        raise PretrainError(f"training ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as checkpoint:
        return _write_outputs(folder, out, Path(checkpoint), space.family, provenance, recipe)


class _RunLocation:
    """Where a pretraining run keeps its checkpoints: ``out/ray/pretrain`` on one machine, or a run of its own
    under ``NAS_STORAGE_URI/pretrain`` when that is set. Recorded in ``out/run.json`` for ``--resume``."""

    def __init__(self, location: str, name: str):
        self.location, self.name = location, name
        self.storage_path, self.filesystem = ray_storage(location)

    @classmethod
    def for_output(cls, out: Path, resume: bool) -> _RunLocation:
        record, legacy = out / RUN_FILE, out / "ray" / RUN_NAME  # legacy: a run started before run.json
        exists = record.is_file() or legacy.exists()
        if exists and not resume:
            raise PretrainError(
                f"{out} already holds a pretraining run; pass --resume to continue it or choose another --out"
            )
        if resume and not exists:
            raise PretrainError(f"nothing to resume in {out}; run without --resume first")
        if record.is_file():
            saved = json.loads(record.read_text())
            return cls(saved["location"], saved["name"])
        if exists or not os.environ.get(STORAGE_URI_ENV):
            return cls(str(out / "ray"), RUN_NAME)
        return cls(storage_location("pretrain"), f"{out.name}-{uuid.uuid4().hex[:8]}")

    def save(self, out: Path) -> None:
        (out / RUN_FILE).write_text(json.dumps({"location": self.location, "name": self.name}, indent=2) + "\n")

    def latest_checkpoint(self) -> str | None:
        return latest_complete_checkpoint(f"{self.storage_path.rstrip('/')}/{self.name}", self.filesystem)


class ProgressBoard:
    """A Ray actor (made one by the driver) holding rank 0's latest progress: the driver's bar and progress file
    read it, wherever rank 0 runs."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def update(self, state: dict[str, Any]) -> None:
        self.state = state

    def read(self) -> dict[str, Any] | None:
        return self.state


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from nas.models.weights import load_weights, save_weights
    from nas.proxies.base import move, unwrap
    from nas.proxies.loop import autocast_for, lr_factor, make_optimizer, train_step

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    recipe = config["recipe"]
    space = config["space"]
    data = ray.get(config["data"]) if isinstance(config["data"], ray.ObjectRef) else config["data"]
    with tempfile.TemporaryDirectory(prefix="nas-export-") as scratch:
        for name, content in ray.get(config["export_files"]).items():
            (Path(scratch) / name).write_bytes(content)
        model = load_exported_model(Path(scratch), space.family)
    hp = {k: recipe[k] for k in SEARCHABLE_HYPERPARAMETERS}
    start, history = 0, []
    # The driver picked the newest whole checkpoint in the storage, a superset of what Ray registered.
    resume_from = config["resume_from"]
    checkpoint = (
        ray.train.Checkpoint(resume_from, filesystem=config["filesystem"])
        if resume_from
        else ray.train.get_checkpoint()
    )
    optimizer_state = None
    if checkpoint:
        with checkpoint.as_directory() as folder:
            load_weights(model, folder)
            state = json.loads((Path(folder) / STATE_FILE).read_text())
            start, history = state["step"], state["history"]
            optimizer_state = torch.load(Path(folder) / OPTIMIZER_FILE, weights_only=True)
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    optimizer = make_optimizer(model, hp["lr"], hp["weight_decay"], float(recipe.get("hidden_lr_scale", 1.0)))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    proxy = get_proxy(space.task)(data, space.data_shape, hp, eval_batches=1)
    unwrapped = unwrap(model)
    autocast = autocast_for(device)
    max_steps, seed = int(recipe["max_steps"]), int(recipe.get("seed", 0))
    log_every = max(1, min(int(recipe.get("log_every", 50)), max_steps // 10))  # short runs still get a curve
    # Each rank draws its own batches; the stream is keyed by the step it starts from, so a resume continues it.
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank * 7919 + start)
    running, count = 0.0, 0
    for step in range(start, max_steps):
        lr = hp["lr"] * lr_factor(step, max_steps, hp["warmup_fraction"], recipe.get("min_lr_ratio", 0.1))
        batch = move(proxy.train_batch(generator), device)
        loss = train_step(model, proxy, optimizer, batch, lr, hp["grad_clip"], autocast, step)
        running, count = running + float(loss.detach()), count + 1
        done = step + 1
        if done % log_every == 0 or done == max_steps or done % int(recipe["checkpoint_every"]) == 0:
            mean = torch.tensor([running / count], device=device)
            if world > 1 and dist.is_initialized():
                dist.all_reduce(mean)
                mean /= world
            history.append({"step": done, "loss": float(mean.item()), "time": time.time()})
            running, count = 0.0, 0
            metrics = {"step": done, "loss": history[-1]["loss"], "resumed_from": start}
            if rank == 0:
                ray.get(config["progress"].update.remote({**metrics, "max_steps": max_steps, "time": time.time()}))
            if done % int(recipe["checkpoint_every"]) == 0 or done == max_steps:
                with tempfile.TemporaryDirectory() as folder:
                    if rank == 0:
                        save_weights(unwrapped, folder)
                        torch.save(optimizer.state_dict(), Path(folder) / OPTIMIZER_FILE)
                        (Path(folder) / STATE_FILE).write_text(json.dumps({"step": done, "history": history}))
                    ray.train.report(
                        metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if rank == 0 else None
                    )
            else:
                ray.train.report(metrics)


def latest_complete_checkpoint(run_dir: str | Path, filesystem: pyarrow.fs.FileSystem | None = None) -> str | None:
    """The checkpoint folder of ``run_dir`` (in ``filesystem``, default local) with the highest step whose files are
    all whole; None if none is.

    Ray Train resumes from the checkpoints its snapshot registered; one uploaded just before the driver died is
    stored but not registered. Whole means: state.json parses, and the weights and optimizer files end where
    their own headers say (a copy cut short by the kill fails this), checked without loading the tensors.
    """
    import pyarrow.fs

    filesystem = filesystem or pyarrow.fs.LocalFileSystem()
    selector = pyarrow.fs.FileSelector(str(run_dir), allow_not_found=True)
    best: tuple[int, str] | None = None
    for info in filesystem.get_file_info(selector):
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith("checkpoint_"):
            continue
        step = _checkpoint_step(filesystem, info.path)
        if step > 0 and _whole_files(filesystem, info.path) and (best is None or step > best[0]):
            best = (step, info.path)
    return best[1] if best else None


def _checkpoint_step(filesystem: pyarrow.fs.FileSystem, folder: str) -> int:
    try:
        with filesystem.open_input_file(f"{folder}/{STATE_FILE}") as handle:
            return int(json.loads(handle.read())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _whole_files(filesystem: pyarrow.fs.FileSystem, folder: str) -> bool:
    from nas.models.weights import WEIGHTS_FILE  # imports torch; the driver has it loaded by now

    try:
        with filesystem.open_input_file(f"{folder}/{WEIGHTS_FILE}") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
            size = handle.size()
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size != 8 + header_size + end:
            return False
        # torch.save writes a zip, whose index is at the end: a cut copy has none
        with filesystem.open_input_file(f"{folder}/{OPTIMIZER_FILE}") as handle, zipfile.ZipFile(handle) as archive:
            archive.infolist()
    except (OSError, ValueError, KeyError, struct.error, zipfile.BadZipFile):
        return False
    return True


class _ProgressWatcher:
    """Polls the progress board: a tqdm bar on the driver and ``out/progress.json`` for people and scripts."""

    def __init__(self, board: Any, path: Path, total: int, show_bar: bool):
        self.board, self.path, self.total, self.show_bar = board, path, total, show_bar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._poll()  # the last state, once the run has ended

    def _poll(self) -> dict[str, Any] | None:
        import ray

        try:
            state = ray.get(self.board.read.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return None
        if state:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as handle:
                json.dump(state, handle)
            os.replace(tmp, self.path)
        return state

    def _run(self) -> None:
        from tqdm.auto import tqdm

        with tqdm(total=self.total, unit="step", desc="pretrain", dynamic_ncols=True, disable=not self.show_bar) as bar:
            while not self._stop.wait(1.0):
                state = self._poll()
                if not state:
                    continue
                bar.n = state["step"]
                bar.set_postfix_str(
                    f"loss {state['loss']:.4g}"
                    + (f" | resumed at {state['resumed_from']}" if state.get("resumed_from") else "")
                )


def _write_outputs(folder: Path, out: Path, checkpoint: Path, family: str, provenance: dict, recipe: dict) -> Path:
    """out/model: the pretrained save_pretrained folder (+ tokenizer / processor, provenance); the loss curve."""
    from nas.models.weights import load_weights

    model = load_exported_model(folder, family)
    load_weights(model, checkpoint)
    target = out / "model"
    if target.exists():
        shutil.rmtree(target)
    model_family = get_family(family)
    model_family.save_pretrained(model, target)
    written = ("config.json", "model.safetensors", PROVENANCE_FILE, *model_family.extra_files)
    for item in folder.iterdir():  # tokenizer or image processor files, the recipe
        if item.is_file() and item.name not in written:
            shutil.copy2(item, target / item.name)
    state = json.loads((checkpoint / STATE_FILE).read_text())
    (target / PROVENANCE_FILE).write_text(
        json.dumps(
            {**provenance, "pretraining": {"steps": state["step"], "recipe": recipe, "history": state["history"]}},
            indent=2,
            default=str,
        )
        + "\n"
    )
    _plot_loss(state["history"], out / "loss_curve.png")
    return target


def _plot_loss(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", markersize=2)
    axis.set_xlabel("step")
    axis.set_ylabel("training loss (mean over workers)")
    axis.set_title("full pretraining")
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
