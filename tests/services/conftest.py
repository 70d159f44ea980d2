"""A real uvicorn server on a free loopback port, tokens, and helpers to drive the API over HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import forget_engines
from tests.services.private_postgres import PrivatePostgres, server_programs

TINY_TEXT = {
    "search.trials": 2,
    "search.concurrency": 1,
    "proxy.steps": 10,
    "proxy.eval_every": 5,
    "proxy.eval_batches": 2,
    "data.max_samples": 400,
    "data.vocab_size": 256,
    "architecture.num_layers": 1,
    "architecture.hidden_size": {"choice": [32, 64]},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    database_url: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_server(database_url: str, **settings) -> Iterator[Server]:
    import uvicorn

    from services.api import create_app
    from services.settings import Settings

    app = create_app(Settings(database_url=database_url, **settings), mount_dashboard=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", database_url)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def sqlite_server(sqlite_url) -> Iterator[Server]:
    yield from start_server(sqlite_url)


@pytest.fixture
def postgres_server(postgres_url) -> Iterator[Server]:
    yield from start_server(postgres_url)


def token_for(server: Server, name: str, admin: bool = False) -> str:
    from services.auth import create_token

    return create_token(server.database_url, name, is_admin=admin)


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.5,
    explain: Callable[[], str] | None = None,
):
    """Poll ``predicate`` until it is truthy; on time-out fail with ``explain()`` (what the test saw) appended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f"\n{explain()}" if explain else ""))


def start_worker(
    database_url: str, *extra: str, ray_address: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``nas worker`` as its own process (and process group, so a test can kill -9 all of it).

    With ``ray_address`` it joins that cluster, as runners in docker-compose do; else it starts its own Ray.
    Its output goes to a temporary log file (``process.log_path``), which ``worker_logs`` shows when a test fails.
    """
    log = tempfile.NamedTemporaryFile(prefix="nas-worker-", suffix=".log", delete=False)
    environment = {**os.environ, **({"RAY_ADDRESS": ray_address} if ray_address else {}), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "nas", "worker", "--storage", database_url, "--poll", "0.5", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=environment,
    )
    log.close()
    process.log_path = log.name  # type: ignore[attr-defined]
    return process


def worker_logs(*processes: subprocess.Popen, tail: int = 4000) -> str:
    """The last ``tail`` characters of each worker's log, for a failure message."""
    parts = []
    for process in processes:
        text = Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
        parts.append(f"--- worker {process.pid} (exit {process.poll()}) ---\n{text[-tail:]}")
    return "\n".join(parts)


def stop_worker(process: subprocess.Popen, timeout: float = 60) -> None:
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(process.log_path)  # type: ignore[attr-defined]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the test's own, which it may stop and start (tests.services.private_postgres)."""
    bin_dir = server_programs()
    if bin_dir is None:
        if os.environ.get("CI"):
            raise RuntimeError("PostgreSQL's initdb is not installed")
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    server = PrivatePostgres(bin_dir)
    try:
        server.start()
        yield server
    finally:
        forget_engines()
        server.remove()
