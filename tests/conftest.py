"""Shared fixtures: an isolated NAS_HOME, real SQLite files, a fresh PostgreSQL database, a local Ray."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep the test cluster on 127.0.0.1
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
# One trial of a few steps with no scheduler: the smallest search that still trains, stores and exports a model.
ONE_TINY_TRIAL = [
    "search.trials=1",
    "search.concurrency=1",
    "search.scheduler=none",
    "proxy.steps=6",
    "proxy.eval_every=3",
    "proxy.eval_batches=1",
]
# One fixed tiny BERT (text-mlm-tiny overrides): a model that trains in a second on a CPU.
ONE_BERT_SHAPE = [
    "architecture.block=bert",
    "architecture.num_layers=1",
    "architecture.hidden_size=32",
    "architecture.num_heads=2",
    "architecture.ffn_ratio=2",
    "architecture.activation=gelu",
]
# The cost figures every trained trial reports, each a positive number.
COST_METRICS = ("params", "non_embedding_params", "flops", "latency_ms", "throughput", "peak_memory_mb", "wall_time_s")
POSTGRES_ADMIN_URL = os.environ.get("NAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that train through Ray first: under xdist (a module at a time, in this order) the quick modules
    then fill the tail instead of one slow module running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("ray") is None)


@pytest.fixture(autouse=True)
def nas_home(tmp_path_factory, monkeypatch):
    """Every test gets its own caches and Ray result folders, never the user's."""
    home = tmp_path_factory.mktemp("nas_home")
    monkeypatch.setenv("NAS_HOME", str(home))
    return home


@contextlib.contextmanager
def nas_home_set_to(path: Path):
    """NAS_HOME for a module-scoped fixture (monkeypatch is function-scoped), restored afterwards."""
    old = os.environ.get("NAS_HOME")
    os.environ["NAS_HOME"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("NAS_HOME", None)
        else:
            os.environ["NAS_HOME"] = old


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'nas.db'}"


@pytest.fixture
def postgres_url():
    """A brand-new PostgreSQL database for the test, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"nas_test_{uuid.uuid4().hex[:10]}"
    admin = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    from nas.store.db import get_engine, normalise_url

    get_engine(normalise_url(f"{base}/{name}")).dispose()
    forget_engines()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def forget_engines() -> None:
    """Drop this process's cached engines, sessions and Optuna storages (their database is about to go away)."""
    from nas.store.db import _session_factory, get_engine, optuna_storage

    get_engine.cache_clear()
    _session_factory.cache_clear()
    optuna_storage.cache_clear()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole session, on loopback, 2 CPUs; shut down at the end."""
    import ray

    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1", configure_logging=False
    )
    yield ray
    ray.shutdown()
