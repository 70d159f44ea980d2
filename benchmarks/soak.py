"""Soak: many tiny trials through the whole service on a loopback cluster, with a database restart and a dead node.

The deployment of docker-compose.yml as local processes: a Ray cluster (a head with no CPUs and two worker nodes
of 2 CPUs, ``ray.cluster_utils.Cluster`` on 127.0.0.1), a PostgreSQL server of its own (so it may restart it), the
API (``nas serve --no-runner``) and ``--runners`` runners (``nas worker``). ``--studies`` studies of ``--trials``
tiny text trials each are submitted over REST at once (one trial at a time each, ``search.max_failures=2``).
While they run, a client reads the API (list, detail, trials) every ``--poll`` seconds. Once a third of all trials
have finished, PostgreSQL is stopped for ``--outage`` seconds and started again; once two thirds have, one worker
node is killed (SIGKILL to its raylet and workers).

Keys: ``trials`` (finished in all), ``failed`` (FAIL, not lost), ``lost`` (cut short and marked lost), ``rerun``
(claims beyond each study's first: a study handed back and run again), ``restarted_trials`` (trials Tune started
again after the node died), ``trials_per_hour``, ``api_rss_mb_*`` and ``runner_rss_mb_*`` (resident memory once the
first trials have finished, and at the end; runners summed), ``api_5xx`` (server errors other than the 503s the
API answers by design while the database is down, which are counted as ``api_503_during_outage``).
Targets: lost = 0, rerun = 0, api_5xx = 0, memory growth under 10%.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, record

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=4)
    parser.add_argument("--trials", type=int, default=50, help="trials per study")
    parser.add_argument("--runners", type=int, default=4)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds PostgreSQL is down")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between API reads")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()

    import httpx
    from ray.cluster_utils import Cluster

    from services.auth import create_token
    from tests.services.conftest import TINY_TEXT, free_port  # the suite's tiny text search, one trial at a time
    from tests.services.private_postgres import PrivatePostgres, server_programs

    programs = server_programs()
    if programs is None:
        sys.exit("PostgreSQL's server programs (initdb, pg_ctl) are needed")
    postgres = PrivatePostgres(programs)
    postgres.start()
    loopback = {"node_ip_address": "127.0.0.1", "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **loopback})
    nodes = [cluster.add_node(num_cpus=2, **loopback) for _ in range(2)]
    cluster.wait_for_nodes()
    home = Path(tempfile.mkdtemp(prefix="nas-soak-"))
    environment = {
        **os.environ,
        "NAS_DATABASE_URL": postgres.url,
        "RAY_ADDRESS": cluster.address,
        "NAS_HOME": str(home),
        "NAS_DB_RETRY_S": "30",
        "PYTHONPATH": str(REPO),
    }
    port = free_port()
    processes: list[subprocess.Popen] = []
    api_log = open(home / "api.log", "w")  # closed at the end
    try:
        from nas.store.db import upgrade

        upgrade(postgres.url)
        token = create_token(postgres.url, "soak")
        api = _start([sys.executable, "-m", "nas", "serve", "--no-runner", "--port", str(port)], environment, api_log)
        processes.append(api)
        runners = [
            _start([sys.executable, "-m", "nas", "worker", "--poll", "0.5"], environment, api_log)
            for _ in range(args.runners)
        ]
        processes += runners
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        _wait(lambda: _status(client, "/healthz") in (200, 503), 60, "the API")
        overrides = {**TINY_TEXT, "search.trials": args.trials, "search.scheduler": "none", "search.max_failures": 2}
        ids = []
        for index in range(args.studies):
            body = {"space": "text-mlm-tiny", "name": f"soak-{index}", "overrides": overrides}
            answer = client.post("/api/v1/studies", json=body)
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        budget = args.studies * args.trials
        reader = ApiReader(client, ids, args.poll)
        reader.start()
        started = time.monotonic()

        def done() -> int:
            return sum(reader.finished.values())

        _wait(lambda: done() >= 4, 600, "the first trials")
        rss_start = {"api": _rss_mb([api]), "runners": _rss_mb(runners)}
        _wait(lambda: done() >= budget // 3, args.timeout, "a third of the trials")
        reader.outage.set()
        postgres.stop()
        time.sleep(args.outage)
        postgres.start()
        reader.outage.clear()
        print(f"database restarted after {done()} trials", flush=True)
        _wait(lambda: done() >= 2 * budget // 3, args.timeout, "two thirds of the trials")
        cluster.remove_node(nodes[0], allow_graceful=False)
        print(f"worker node killed after {done()} trials", flush=True)
        _wait(lambda: reader.all_ended, args.timeout, "every study to end")
        wall = time.monotonic() - started
        rss_end = {"api": _rss_mb([api]), "runners": _rss_mb(runners)}
        reader.stop()
        counts = _counts(postgres.url, [f"soak-{index}" for index in range(args.studies)])
    finally:
        for process in processes:
            _stop(process)
        api_log.close()
        cluster.shutdown()
        postgres.remove()
    record(
        "soak",
        {
            **counts,
            "budget": budget,
            "trials_per_hour": round(counts["trials"] / wall * 3600, 1),
            "wall_s": round(wall, 1),
            "api_rss_mb_start": rss_start["api"],
            "api_rss_mb_end": rss_end["api"],
            "runner_rss_mb_start": rss_start["runners"],
            "runner_rss_mb_end": rss_end["runners"],
            "api_requests": reader.requests,
            "api_5xx": reader.server_errors,
            "api_503_during_outage": reader.unavailable,
            "studies": args.studies,
            "runners": args.runners,
            "outage_s": args.outage,
        },
    )


class ApiReader(threading.Thread):
    """Reads the API like a dashboard would, counting answers; also the source of progress (finished trials)."""

    def __init__(self, client, ids: list[int], poll_s: float):
        super().__init__(daemon=True)
        self.client, self.ids, self.poll_s = client, ids, poll_s
        self.finished: dict[int, int] = {}
        self.statuses: dict[int, str] = {}
        self.requests = self.server_errors = self.unavailable = 0
        self.outage = threading.Event()
        self._stop_event = threading.Event()

    @property
    def all_ended(self) -> bool:
        return len(self.statuses) == len(self.ids) and all(
            s in ("succeeded", "failed", "cancelled", "interrupted") for s in self.statuses.values()
        )

    def run(self) -> None:
        while not self._stop_event.wait(self.poll_s):
            self._get("/api/v1/studies")
            for study in self.ids:
                body = self._get(f"/api/v1/studies/{study}")
                if body:
                    counts = body["counts"]
                    self.finished[study] = counts["complete"] + counts["pruned"]
                    self.statuses[study] = body["status"]
            self._get(f"/api/v1/studies/{self.ids[0]}/trials?limit=50")

    def _get(self, path: str):
        self.requests += 1
        try:
            answer = self.client.get(path)
        except Exception:
            self.server_errors += 1
            return None
        if answer.status_code == 503 and (self.outage.is_set() or "database" in answer.text):
            self.unavailable += 1
            return None
        if answer.status_code >= 500:
            self.server_errors += 1
            return None
        return answer.json() if answer.status_code == 200 else None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _counts(url: str, names: list[str]) -> dict:
    import optuna
    from sqlalchemy import select

    from nas.store.db import optuna_storage, session_scope
    from nas.store.models import Study
    from nas.store.trials import count_trials, finished

    trials = failed = lost = restarted = 0
    reasons: set[str] = set()
    for name in names:
        study_trials = optuna.load_study(study_name=name, storage=optuna_storage(url)).get_trials(deepcopy=False)
        trials += finished(count_trials(study_trials))
        lost += sum(1 for t in study_trials if t.user_attrs.get("lost"))
        failures = [t for t in study_trials if t.state.name == "FAIL" and not t.user_attrs.get("lost")]
        failed += len(failures)
        reasons |= {str(t.user_attrs.get("fail_reason", "no reason recorded"))[:200] for t in failures}
        restarted += sum(1 for t in study_trials if t.user_attrs.get("restarts"))
    with session_scope(url) as session:
        rows = list(session.scalars(select(Study).where(Study.name.in_(names))))
    return {
        "trials": trials,
        "failed": failed,
        "lost": lost,
        "rerun": sum(row.attempts - 1 for row in rows),
        "restarted_trials": restarted,
        "succeeded_studies": sum(row.status == "succeeded" for row in rows),
        "fail_reasons": sorted(reasons),
    }


def _start(command: list[str], environment: dict, log) -> subprocess.Popen:
    return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _rss_mb(processes: list[subprocess.Popen]) -> float:
    """Resident memory of the processes and their descendants, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    wanted = {process.pid for process in processes}
    grown = True
    while grown:
        more = {pid for pid, parent in parents.items() if parent in wanted} - wanted
        grown = bool(more)
        wanted |= more
    total_kb = 0
    for pid in wanted:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total_kb / 1024, 1)


def _status(client, path: str) -> int | None:
    try:
        return client.get(path).status_code
    except Exception:
        return None


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
