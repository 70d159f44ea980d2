"""Searches on a Ray cluster of three nodes on loopback (a head and two workers, each worker declaring one GPU):
GPUs shared by fractional trials, a trial no node can hold, and a worker node killed mid-search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from nas.pretrain import latest_complete_checkpoint
from nas.store.artifacts import filesystem_for
from nas.store.db import optuna_storage
from nas.store.trials import count_trials, finished
from tests.conftest import SPACES

pytestmark = [pytest.mark.ray]
TINY = [
    "search.scheduler=none",
    "proxy.eval_every=5",
    "proxy.eval_batches=1",
    "data.max_samples=400",
    "data.vocab_size=256",
    "architecture.num_layers=1",
    "architecture.hidden_size={choice: [32, 64]}",
]


@pytest.fixture(scope="module")
def loopback_cluster() -> Iterator:
    """ray.cluster_utils.Cluster: a head with no CPUs for trials and two worker nodes of 2 CPUs and 1 GPU each (a
    declared GPU: Ray assigns it and sets CUDA_VISIBLE_DEVICES; torch finds no CUDA here and trains on the CPU)."""
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **loopback})
    for _ in range(2):
        cluster.add_node(num_cpus=2, num_gpus=1, **loopback)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def search(cluster, folder: Path, name: str, *settings: str, wait: bool = True, env: dict[str, str] | None = None):
    """``nas search`` as its own process, joined to the cluster by RAY_ADDRESS, on a SQLite file in ``folder``."""
    command = [sys.executable, "-m", "nas", "search", str(SPACES / "text-mlm-tiny.yaml"), "--study-name", name]
    command += ["--storage", f"sqlite:///{folder / 'nas.db'}", "--no-progress"]
    for setting in [*TINY, *settings]:
        command += ["--set", setting]
    environment = {**os.environ, "RAY_ADDRESS": cluster.address, **(env or {})}
    if wait:
        return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=environment)
    return subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )


def export_in_a_fresh_process(
    folder: Path, name: str, out: Path | str, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """``nas export`` of study ``name`` in the SQLite file in ``folder`` to ``out`` (a folder or a storage URI), a new
    process with ``env`` added."""
    return subprocess.run(
        [sys.executable, "-m", "nas", "export", name, "--out", str(out), "--storage", f"sqlite:///{folder / 'nas.db'}"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def stored_trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(f"sqlite:///{folder / 'nas.db'}"))
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def test_half_a_gpu_per_trial__two_trials_share_each_gpu_and_see_it_as_cuda_visible_devices(loopback_cluster, tmp_path):
    result = search(
        loopback_cluster,
        tmp_path,
        "halves",
        "search.trials=4",
        "search.concurrency=4",
        "proxy.steps=30",
        "resources_per_trial.cpu=1",
        "resources_per_trial.gpu=0.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [t for t in stored_trials(tmp_path, "halves") if t.state.name == "COMPLETE"]
    assert len(trials) == 4
    by_node = defaultdict(list)
    for trial in trials:
        assert trial.user_attrs["cuda_visible_devices"] == "0"  # each node's one GPU, as Ray assigned it
        by_node[trial.user_attrs["node_id"]].append(trial)
    assert sorted(len(group) for group in by_node.values()) == [2, 2]
    for first, second in by_node.values():  # the two on one GPU ran at the same time
        assert max(first.datetime_start, second.datetime_start) < min(first.datetime_complete, second.datetime_complete)


def test_a_trial_no_node_can_hold__fails_the_study_at_once_and_says_why(loopback_cluster, tmp_path):
    started = time.monotonic()
    result = search(loopback_cluster, tmp_path, "too-big", "search.trials=2", "resources_per_trial.gpu=2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no trial could start" in result.stderr and "2 CPU and 1 GPU" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 120  # no wait in Tune's queue (a bound, far above the usual seconds)
    assert stored_trials(tmp_path, "too-big") == []


@pytest.fixture
def s3_server() -> Iterator[dict[str, str]]:
    """moto's S3 server on a free loopback port with one bucket; the settings a process needs to use it."""
    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    from tests.services.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    pyarrow.fs.S3FileSystem(
        access_key="testing",
        secret_key="testing",
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        allow_bucket_creation=True,
    ).create_dir("nas-artifacts")
    try:
        yield {
            **credentials,
            "NAS_STORAGE_URI": "s3://nas-artifacts/team",
            "NAS_STORAGE_ENDPOINT": f"http://127.0.0.1:{port}",
        }
    finally:
        server.stop()


def test_search_with_s3_storage__trials_record_uris_and_a_fresh_process_exports_the_winner(
    loopback_cluster, tmp_path, s3_server
):
    result = search(
        loopback_cluster, tmp_path, "on-s3", "search.trials=2", "search.concurrency=2", "proxy.steps=10", env=s3_server
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [t for t in stored_trials(tmp_path, "on-s3") if t.state.name == "COMPLETE"]
    assert len(trials) == 2
    for trial in trials:
        assert trial.user_attrs["weights_path"].startswith("s3://nas-artifacts/team/ray_results/on-s3/")
    exported = export_in_a_fresh_process(tmp_path, "on-s3", tmp_path / "export", s3_server)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "export" / "config.json").is_file() and (tmp_path / "export" / "model.safetensors").is_file()
    unreachable = {**s3_server, "NAS_STORAGE_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9
    failed = export_in_a_fresh_process(tmp_path, "on-s3", tmp_path / "again", unreachable)
    assert failed.returncode == 1 and "cannot read s3://nas-artifacts/team/" in failed.stderr
    assert "Traceback" not in failed.stderr

    # Another machine, with a NAS_HOME of its own (no tokenizer cache): the export goes to the storage, and full
    # pretraining reads it from there and keeps its checkpoints there, wherever its ranks run.
    elsewhere = {**s3_server, "NAS_HOME": str(tmp_path / "elsewhere"), "RAY_ADDRESS": loopback_cluster.address}
    published = export_in_a_fresh_process(tmp_path, "on-s3", "s3://nas-artifacts/team/exports/winner", elsewhere)
    assert published.returncode == 0, published.stderr[-3000:]
    pretrained = subprocess.run(
        [sys.executable, "-m", "nas", "pretrain", "s3://nas-artifacts/team/exports/winner", "--out", "full"]
        + ["--max-steps", "4", "--workers", "2", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **elsewhere},
    )
    assert pretrained.returncode == 0, pretrained.stderr[-3000:]
    out = tmp_path / "full"
    run = json.loads((out / "run.json").read_text())
    assert run["location"] == "s3://nas-artifacts/team/pretrain" and not (out / "ray").exists()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3_server.items():
            patch.setenv(key, value)
        filesystem, path = filesystem_for(run["location"])
        newest = latest_complete_checkpoint(f"{path}/{run['name']}", filesystem)
    assert newest is not None and newest.startswith(f"nas-artifacts/team/pretrain/{run['name']}/checkpoint_")
    assert json.loads((out / "progress.json").read_text())["step"] == 4
    provenance = json.loads((out / "model" / "nas_provenance.json").read_text())
    assert provenance["pretraining"]["steps"] == 4
    assert (out / "model" / "tokenizer.json").is_file() and (out / "model" / "model.safetensors").is_file()


@pytest.mark.postgres
def test_the_compose_topology_on_loopback__api_runner_ray_postgres_and_s3_run_a_study_end_to_end(
    loopback_cluster, postgres_url, s3_server, tmp_path
):
    """docker-compose.yml's services as local processes: the API (`nas serve --no-runner`) and a runner (`nas worker`)
    with the compose file's settings, joined to the loopback Ray cluster, on PostgreSQL and the S3 server."""
    import httpx

    from tests.services.conftest import free_port, stop_worker, wait_for, worker_logs
    from tests.test_deploy_files import nas_environment

    corpus = tmp_path / "corpora" / "notes"
    corpus.mkdir(parents=True)
    (corpus / "notes.txt").write_text("\n\n".join(f"note {i}: a line of text to train on" for i in range(400)))
    settings = {
        **s3_server,
        "NAS_DATABASE_URL": postgres_url,
        "RAY_ADDRESS": loopback_cluster.address,
        "NAS_HOME": str(tmp_path / "home"),
        "NAS_DATA_ROOTS": str(tmp_path / "corpora"),
        "NAS_DB_RETRY_S": "30",
    }
    assert settings.keys() == nas_environment().keys()  # every setting the compose file gives its services
    environment = {**os.environ, **settings}
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "nas", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-runner"],
        env=environment,
        stdout=(tmp_path / "api.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "nas", "worker", "--poll", "0.5"],
        env=environment,
        stdout=(tmp_path / "runner.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    runner.log_path = str(tmp_path / "runner.log")  # type: ignore[attr-defined]  # what worker_logs shows
    api.log_path = str(tmp_path / "api.log")  # type: ignore[attr-defined]
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: _answers(client, "/healthz"), 60, "the API to start")
        client.headers["Authorization"] = "Bearer " + token_for_url(postgres_url, "alice")
        body = {
            "space": "text-mlm-tiny",
            "name": "compose",
            "overrides": {
                "search.trials": 2,
                "search.concurrency": 2,
                "search.scheduler": "none",
                "proxy.steps": 10,
                "proxy.eval_every": 5,
                "data.source": str(corpus),
                "data.vocab_size": 256,
                "data.seq_len": 32,
                "architecture.num_layers": 1,
                "architecture.hidden_size": 32,
            },
        }
        created = client.post("/api/v1/studies", json=body)
        assert created.status_code == 201, created.text
        study = created.json()["id"]
        wait_for(
            lambda: client.get(f"/api/v1/studies/{study}").json()["status"] in ("succeeded", "failed"),
            240,
            "the study to end",
            explain=lambda: f"{client.get(f'/api/v1/studies/{study}').text}\n{worker_logs(api, runner)}",
        )
        detail = client.get(f"/api/v1/studies/{study}").json()
        assert detail["status"] == "succeeded", detail
        exported = client.get(f"/api/v1/studies/{study}/export")  # the API process reads the weights from S3
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
    finally:
        client.close()
        stop_worker(runner)
        stop_worker(api)
    assert all(t.user_attrs["weights_path"].startswith("s3://") for t in _trials(postgres_url, "compose"))


def _answers(client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except Exception:  # not listening yet
        return False


def token_for_url(database_url: str, owner: str) -> str:
    from services.auth import create_token

    return create_token(database_url, owner)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=optuna_storage(url)).get_trials(deepcopy=False)


# Last in the module: it removes one of the cluster's two worker nodes.
def test_a_worker_node_killed_mid_search__its_trial_is_retried_on_the_other_and_every_trial_is_accounted_for(
    loopback_cluster, tmp_path
):
    budget = 4
    process = search(
        loopback_cluster,
        tmp_path,
        "survivor",
        f"search.trials={budget}",
        "search.concurrency=2",
        "search.max_failures=2",
        "proxy.steps=150",
        "resources_per_trial.cpu=2",
        wait=False,
    )
    try:
        deadline = time.monotonic() + 180
        while (
            len([t for t in stored_trials(tmp_path, "survivor") if t.state.name == "RUNNING" and t.intermediate_values])
            < 2
        ):
            assert process.poll() is None and time.monotonic() < deadline, (
                process.stdout.read() if process.stdout else ""
            )
            time.sleep(0.5)
        # Both trials are training (each has reported), one on each worker node.
        victim = next(iter(loopback_cluster.worker_nodes))
        loopback_cluster.remove_node(victim, allow_graceful=False)  # SIGKILL to the node's raylet and workers
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, output[-3000:]
    trials = stored_trials(tmp_path, "survivor")
    assert "RUNNING" not in {t.state.name for t in trials}
    assert finished(count_trials(trials)) == budget
    assert len({t.user_attrs["node_id"] for t in trials if t.state.name == "COMPLETE"}) == 1  # all on the survivor
    print(output[-3000:])
    print(
        [
            (
                t.number,
                t.state.name,
                t.user_attrs.get("node_id"),
                t.user_attrs.get("restarts"),
                t.datetime_start,
                t.datetime_complete,
            )
            for t in trials
        ]
    )
    assert [t.user_attrs.get("restarts") for t in trials].count(1) == 1  # the killed node's trial, started again
