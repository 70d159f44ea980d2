"""REST API cost and latency: server CPU per request against /healthz's, one client alone on every read endpoint,
50 concurrent clients for 30 s; one study holding 100,000 trials; and optuna-dashboard beside it on the same data.

A fresh PostgreSQL database gets one succeeded ``text-mlm-tiny`` study whose Optuna study holds ``--trials``
trials (mostly COMPLETE, some PRUNED, a few FAIL; the parameters, distributions and user attributes a real
search writes). They are written directly, not searched: the first ``--add-trials`` through Optuna's own
``Study.add_trials`` (timed, as a check of the rate) and the rest with bulk INSERTs of the same rows. The real
service (``create_app`` under uvicorn, ``--workers`` processes, 2 by default: one per core) runs in processes of
its own on a free loopback port; a closed-loop asyncio + httpx load generator in this process rotates each client
among ``GET /studies/{id}``, ``/studies/{id}/trials?limit=50`` and ``/studies/{id}/best`` with a bearer token.
Every request's latency is kept; a non-2xx answer or an exception is an error.

Headline: ``cpu_ratio_to_healthz``, the server's CPU per request of that mix over its CPU per request of
``GET /healthz`` (no auth, one query: the framework's own floor) under the same clients in the same run; target
<= 2. Beside it: ``solo_worst_p99_ms``, the worst p99 of one client alone on each read endpoint (``solo``: the
study list, a study, pages of trials by number, by value and the last page, the best trials, the spaces; target
< 50 ms at 100,000 trials), and ``errors`` under the 50 clients (target 0). Server, load generator and PostgreSQL
share the machine's cores; their CPU per request is recorded (``*_cpu_ms_per_request``, seconds in ``cpu_s``). In a
closed loop, latency and throughput are tied by Little's law (mean latency = clients / rps), also recorded.

``dashboard_peer``: what a user would otherwise open, optuna-dashboard (``optuna-dashboard URL``, its own server)
on the same database; one client on its study endpoint ``/api/studies/{id}`` (every trial of the study, as its page
loads them), with its p50 and server CPU per request. The database is dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import REPO, record

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument(
        "--add-trials",
        type=int,
        default=200,
        help="how many trials go through optuna's Study.add_trials (timed); the rest are bulk-inserted",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes (2, one per core: 66-75 requests/s against 43 with 1 on the 2-core machine)",
    )
    parser.add_argument(
        "--solo", type=float, default=20.0, help="seconds of one client alone on every read endpoint (0: skip)"
    )
    parser.add_argument(
        "--peer", type=float, default=30.0, help="seconds of one client on optuna-dashboard's study endpoint (0: skip)"
    )
    parser.add_argument(
        "--floor", type=float, default=10.0, help="seconds of GET /healthz under the same clients (0: skip)"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("NAS_BENCH_POSTGRES", POSTGRES_ADMIN),
        help="an admin URL; a nas_bench_<random> database is created beside it and dropped",
    )
    parser.add_argument("--no-record", action="store_true", help="print the results, write nothing")
    parser.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # internal: one server process
    parser.add_argument("--ready-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_port is not None:
        serve(args.serve_port, args.ready_dir)
        return

    import psycopg

    name = f"nas_bench_{uuid.uuid4().hex[:10]}"
    admin = args.postgres.replace("postgresql+psycopg://", "postgresql://")
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    servers: list[subprocess.Popen] = []
    try:
        study_id, seeding = seed(url, args.trials, args.add_trials)
        from services.auth import create_token

        token = create_token(url, "bench")
        servers, port = start_server(url, args.workers)
        base = f"http://127.0.0.1:{port}"
        check(base, token, study_id, args.trials)
        index = marks_index_present(url)
        busy = machine_busy_fraction()
        if busy > 0.15:
            print(
                f"warning: the machine is {busy:.0%} busy before the load starts; the numbers will show it", flush=True
            )
        load = asyncio.run(run_load(base, token, study_id, args, [p.pid for p in servers]))
        stop_server(servers)
        peer = dashboard_peer(url, args.trials, args.peer) if args.peer > 0 else {}
    finally:
        stop_server(servers)
        from nas.store.db import get_engine, normalise_url

        get_engine(normalise_url(url)).dispose()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    payload = {key: load.get(key) for key in HEADLINE_KEYS}
    payload.update(
        {
            "clients": args.clients,
            "duration_s": args.duration,
            "trials": args.trials,
            "server_workers": args.workers,
            "seeding_s": seeding["seeding_s"],
            "marks_index": index,
            "machine_busy_before": busy,
        }
    )
    payload.update(
        {
            "errors_by_endpoint": {e: load[f"{e}_errors"] for e in ENDPOINTS},
            "error_kinds": load["error_kinds"],
            "cpu_s": {k.removeprefix("cpu_").removesuffix("_s"): load[k] for k in CPU_KEYS},
            "solo": load.get("solo", {}),
            "healthz": load.get("healthz", {}),
            "seeding": seeding,
            "dashboard_peer": peer,
        }
    )
    if args.no_record:
        print(json.dumps(payload, indent=2))
    else:
        record("api_load", payload)


# --- seeding -----------------------------------------------------------------------------------------


class _Recorder:
    """Stands in for an Optuna trial: samples like a random sampler and keeps each parameter's distribution,
    so the space's own define-by-run ``suggest`` gives the exact names and distributions a search stores."""

    def __init__(self, rng: random.Random):
        import optuna.distributions as d

        self.rng, self.d, self.params, self.distributions = rng, d, {}, {}

    def _keep(self, name, distribution, value):
        self.params[name], self.distributions[name] = value, distribution
        return value

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._keep(
            name, self.d.IntDistribution(low, high, step=step, log=log), self.rng.randrange(low, high + 1, step)
        )

    def suggest_float(self, name, low, high, *, step=None, log=False):
        value = math.exp(self.rng.uniform(math.log(low), math.log(high))) if log else self.rng.uniform(low, high)
        return self._keep(name, self.d.FloatDistribution(low, high, step=step, log=log), value)

    def suggest_categorical(self, name, choices):
        return self._keep(name, self.d.CategoricalDistribution(choices), self.rng.choice(list(choices)))


def make_trials(space, count: int, seed: int = 0) -> list:
    """``count`` frozen trials as a finished search leaves them: 85% COMPLETE, 12% PRUNED (a sixth of them
    infeasible), 3% FAIL (a fifth of them lost to a cancel)."""
    import optuna
    from optuna.trial import TrialState

    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc).replace(tzinfo=None)  # Optuna keeps naive UTC
    steps, every = space.proxy.steps, space.proxy.eval_every
    trials = []
    for number in range(count):
        recorder = _Recorder(rng)
        candidate = space.suggest(recorder)
        attrs = dict(candidate.to_json())
        roll = rng.random()
        size = math.log(candidate.params.total)
        base_loss = 7.8 - 0.25 * size + rng.gauss(0, 0.15)  # bigger models a little better, plus noise
        wall = rng.uniform(4.0, 12.0)
        started = start + timedelta(seconds=number * 3.0)
        intermediate = {
            step: base_loss + 1.5 * (1 - step / steps) + rng.gauss(0, 0.02) for step in range(every, steps + 1, every)
        }
        metrics = {
            "params": candidate.params.total,
            "non_embedding_params": candidate.params.non_embedding,
            "flops": 6 * candidate.params.total * space.data.seq_len * space.proxy.batch_size * steps,
            "latency_ms": rng.uniform(0.3, 3.0),
            "throughput": rng.uniform(800, 4000),
            "peak_memory_mb": rng.uniform(40, 220),
            "peak_memory_kind": "rss",
            "wall_time_s": wall,
        }
        if roll < 0.85:
            state, values = TrialState.COMPLETE, [intermediate[max(intermediate)]]
            attrs.update(metrics, val_loss=values[0], train_loss=values[0] - 0.05, step=steps)
        elif roll < 0.97:
            state, values = TrialState.PRUNED, None
            if roll < 0.87:
                attrs = {
                    "infeasible": "constraints[1]: violated: params <= 1_000_000",
                    "params": candidate.params.total,
                }
                intermediate, wall = {}, 0.0
            else:
                stopped = rng.choice(sorted(intermediate)[:-1])
                intermediate = {s: v for s, v in intermediate.items() if s <= stopped}
                attrs.update(metrics, val_loss=intermediate[stopped], step=stopped, wall_time_s=wall * stopped / steps)
        else:
            state, values, intermediate = TrialState.FAIL, None, {}
            if roll < 0.976:
                attrs.update(fail_reason="cancelled", lost=True)
            else:
                attrs.update(fail_reason="RuntimeError: CUDA out of memory (simulated)")
        attrs["ray_trial_id"] = f"{uuid.UUID(int=rng.getrandbits(128)).hex[:8]}"
        trial = optuna.trial.create_trial(
            state=state,
            values=values,
            params=recorder.params,
            distributions=recorder.distributions,
            user_attrs=attrs,
            intermediate_values=intermediate,
        )
        trial.datetime_start, trial.datetime_complete = started, started + timedelta(seconds=wall)
        trials.append(trial)
    return trials


def bulk_insert(url: str, optuna_id: int, trials: list, first_number: int) -> None:
    """The rows ``Study.add_trials`` would write, as a handful of multi-row INSERTs."""
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb.models import (
        TrialIntermediateValueModel,
        TrialModel,
        TrialParamModel,
        TrialUserAttributeModel,
        TrialValueModel,
    )
    from sqlalchemy import insert, select

    from nas.store.db import session_scope

    finite, iv_finite = (
        TrialValueModel.TrialValueType.FINITE,
        TrialIntermediateValueModel.TrialIntermediateValueType.FINITE,
    )
    with session_scope(url) as session:
        session.execute(
            insert(TrialModel.__table__),
            [
                {
                    "number": first_number + i,
                    "study_id": optuna_id,
                    "state": t.state,
                    "datetime_start": t.datetime_start,
                    "datetime_complete": t.datetime_complete,
                }
                for i, t in enumerate(trials)
            ],
        )
        ids = dict(
            session.execute(
                select(TrialModel.number, TrialModel.trial_id).where(
                    TrialModel.study_id == optuna_id, TrialModel.number >= first_number
                )
            ).all()
        )
        params, values, attrs, intermediate = [], [], [], []
        for i, t in enumerate(trials):
            trial_id = ids[first_number + i]
            for key, value in t.params.items():
                distribution = t.distributions[key]
                params.append(
                    {
                        "trial_id": trial_id,
                        "param_name": key,
                        "param_value": distribution.to_internal_repr(value),
                        "distribution_json": distribution_to_json(distribution),
                    }
                )
            for objective, value in enumerate(t.values or []):
                values.append({"trial_id": trial_id, "objective": objective, "value": value, "value_type": finite})
            for key, value in t.user_attrs.items():
                attrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
            for step, value in t.intermediate_values.items():
                intermediate.append(
                    {
                        "trial_id": trial_id,
                        "step": step,
                        "intermediate_value": value,
                        "intermediate_value_type": iv_finite,
                    }
                )
        for model, rows in (
            (TrialParamModel, params),
            (TrialValueModel, values),
            (TrialUserAttributeModel, attrs),
            (TrialIntermediateValueModel, intermediate),
        ):
            for chunk in range(0, len(rows), 20_000):
                session.execute(insert(model.__table__), rows[chunk : chunk + 20_000])


def seed(url: str, count: int, via_optuna: int) -> tuple[int, dict]:
    import optuna

    from nas.space import load_space
    from nas.space.shipped import spaces_dir
    from nas.store.db import optuna_storage, session_scope, upgrade
    from nas.store.models import utcnow
    from services.api.crud import create_study
    from services.api.schemas import StudyCreate
    from services.auth import Principal

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    began = time.perf_counter()
    upgrade(url)
    overrides = {"search.trials": count}
    space = load_space(spaces_dir() / "text-mlm-tiny.yaml", overrides)
    with session_scope(url) as session:
        row = create_study(
            session, StudyCreate(space="text-mlm-tiny", name="api-load", overrides=overrides), space, Principal("bench")
        )
        row.status, row.attempts, row.started_at, row.finished_at = "succeeded", 1, utcnow(), utcnow()
        study_id, name = row.id, row.name
    study = optuna.create_study(storage=optuna_storage(url), study_name=name, direction="minimize")
    t0 = time.perf_counter()
    trials = make_trials(space, count)
    generate = time.perf_counter() - t0
    via_optuna = min(via_optuna, count)
    t0 = time.perf_counter()
    study.add_trials(trials[:via_optuna])
    add_trials = time.perf_counter() - t0
    t0 = time.perf_counter()
    bulk_insert(url, study._study_id, trials[via_optuna:], via_optuna)
    bulk = time.perf_counter() - t0
    from sqlalchemy import text

    from nas.store.db import get_engine

    # Statistics and visibility maps as autovacuum leaves a long-lived database (it vacuums after bulk inserts too).
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("trials", "trial_values", "trial_params", "trial_user_attributes", "trial_intermediate_values"):
            connection.execute(text(f"VACUUM ANALYZE {table}"))
    total = time.perf_counter() - began
    per_trial_optuna = add_trials / via_optuna if via_optuna else None
    print(
        f"seeded {count} trials in {total:.1f} s: generate {generate:.1f} s, add_trials {via_optuna} in {add_trials:.1f} s"
        f" ({(per_trial_optuna or 0) * 1e3:.1f} ms/trial), bulk {count - via_optuna} in {bulk:.1f} s",
        flush=True,
    )
    return study_id, {
        "seeding_s": total,
        "seed_generate_s": generate,
        "seed_add_trials_n": via_optuna,
        "seed_add_trials_s": add_trials,
        "seed_bulk_s": bulk,
        "add_trials_ms_per_trial": per_trial_optuna * 1e3 if per_trial_optuna else None,
    }


def dashboard_peer(url: str, trials: int, seconds: float, first_timeout: float = 900.0) -> dict:
    """optuna-dashboard's own server on the same database: its first answer for the study (every trial, as its page
    first loads them), then what its page polls every few seconds (``?after=N``, the trials past those it has),
    one client at a time, with the server's CPU per request. For contrast: it is not our API's payload. A first
    answer that takes over ``first_timeout`` is recorded as such (at 100,000 trials it holds gigabytes)."""
    import httpx
    from optuna.storages._rdb.models import StudyModel
    from sqlalchemy import select

    from nas.store.db import session_scope

    with session_scope(url) as session:
        optuna_id = session.scalar(select(StudyModel.study_id).where(StudyModel.study_name == "api-load"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    process = subprocess.Popen(
        [str(dashboard), url, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base, study_path = f"http://127.0.0.1:{port}", f"/api/studies/{optuna_id}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/api/meta").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("optuna-dashboard did not answer /api/meta within 120 s")
                time.sleep(0.2)
            cpu0, t0 = _cpu_seconds(process.pid), time.perf_counter()
            try:
                first = client.get(study_path, timeout=first_timeout).raise_for_status()
            except httpx.TimeoutException:
                print(f"optuna-dashboard: no answer for the study within {first_timeout:.0f} s", flush=True)
                return {"first_timed_out_s": first_timeout, "first_cpu_ms": (_cpu_seconds(process.pid) - cpu0) * 1e3}
            first_s, first_cpu = time.perf_counter() - t0, _cpu_seconds(process.pid) - cpu0
            assert len(first.json()["trials"]) == trials, "optuna-dashboard did not list every trial"
            latencies, cpu0, stop_at = [], _cpu_seconds(process.pid), time.monotonic() + seconds
            while time.monotonic() < stop_at or len(latencies) < 3:
                t0 = time.perf_counter()
                client.get(study_path, params={"after": trials}, timeout=first_timeout).raise_for_status()
                latencies.append(time.perf_counter() - t0)
            poll_cpu = _cpu_seconds(process.pid) - cpu0
    finally:
        stop_server([process])
    result = {
        "first_ms": first_s * 1e3,
        "first_cpu_ms": first_cpu * 1e3,
        "first_bytes": len(first.content),
        "poll_p50_ms": _percentile(latencies, 50) * 1e3,
        "poll_p99_ms": _percentile(latencies, 99) * 1e3,
        "poll_requests": len(latencies),
        "poll_cpu_ms_per_request": poll_cpu / len(latencies) * 1e3,
    }
    print(
        f"optuna-dashboard: first load of the study {result['first_ms']:.0f} ms ({result['first_bytes'] / 1e6:.1f} MB), "
        f"polls p50 {result['poll_p50_ms']:.1f} ms, {result['poll_cpu_ms_per_request']:.1f} ms CPU each",
        flush=True,
    )
    return result


# --- server --------------------------------------------------------------------------------------------


def start_server(url: str, workers: int) -> tuple[list[subprocess.Popen], int]:
    """``workers`` uvicorn processes serving ``services.api.create_app`` (settings from NAS_* variables) on one
    loopback port, each in its own process group, each with its own SO_REUSEPORT socket bound as IPPROTO_TCP.

    Not ``uvicorn --workers N``: its supervisor binds the socket with proto 0, so asyncio never sets TCP_NODELAY
    on accepted connections and every keep-alive response waits ~40 ms for a delayed ACK (Kludex/uvicorn#3149;
    measured here: /healthz 4.9 ms with one process, 48 ms with --workers 2; the single-process path that
    ``nas serve`` uses is not affected). And not one shared listening socket either: the 50 keep-alive
    connections are opened at once and whichever process is idle accepts most of them for the whole run;
    SO_REUSEPORT has the kernel spread them evenly."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))  # keeps the port ours; never listens, so it takes no connections
    port = holder.getsockname()[1]
    ready = Path(tempfile.mkdtemp(prefix="nas-bench-ready-"))
    env = {
        **os.environ,
        "NAS_DATABASE_URL": url,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("NAS_ADMIN_TOKEN", None)
    processes = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-port", str(port), "--ready-dir", str(ready)],
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        for _ in range(workers)
    ]
    import httpx

    deadline = time.monotonic() + 120
    try:
        while len(list(ready.iterdir())) < workers:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a server process exited before listening")
            if time.monotonic() > deadline:
                raise RuntimeError("the server processes did not listen within 120 s")
            time.sleep(0.2)
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 600:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer /healthz within 120 s")
            time.sleep(0.2)
    except BaseException:
        stop_server(processes)
        raise
    finally:
        holder.close()
        shutil.rmtree(ready, ignore_errors=True)
    return processes, port


def serve(port: int, ready: str | None) -> None:
    """One server process (``--serve-port``): the app, then its own SO_REUSEPORT socket on ``port``."""
    import uvicorn

    from services.api import create_app

    app = create_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # proto 6: asyncio sets NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    if ready:
        (Path(ready) / str(os.getpid())).touch()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


def stop_server(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def check(base: str, token: str, study_id: int, trials: int) -> None:
    """The three answers are the real thing before any timing: counts add up, a page, a best trial."""
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        study = client.get(f"/api/v1/studies/{study_id}").raise_for_status().json()
        counts = study["counts"]
        kinds = ("complete", "pruned", "failed", "infeasible", "lost")
        assert sum(counts[kind] for kind in kinds) == trials, counts
        page = client.get(f"/api/v1/studies/{study_id}/trials", params={"limit": 50}).raise_for_status().json()
        assert page["count"] == trials and len(page["data"]) == 50, page["count"]
        best = client.get(f"/api/v1/studies/{study_id}/best").raise_for_status().json()
        assert best["trials"] and best["trials"][0]["number"] == study["best"]["number"]
        assert client.get(f"/api/v1/studies/{study_id}").status_code == 200
        print(f"service ok: counts {counts}, best trial {study['best']['number']}", flush=True)


# --- load ----------------------------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = _stat(current)
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _postgres_cpu_seconds() -> float:
    """CPU seconds of every PostgreSQL process on this machine, plus the exited backends and parallel workers
    the postmaster has reaped (its cutime + cstime). 0 where PostgreSQL runs elsewhere (e.g. in a container)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = _stat(entry.name)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
        parent = fields[1]
        try:
            is_postmaster = Path(f"/proc/{parent}/comm").read_text().strip() != "postgres"
        except (FileNotFoundError, ProcessLookupError):
            is_postmaster = True
        if is_postmaster:
            total += (int(fields[13]) + int(fields[14])) / TICKS
    return total


def _machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine, all cores (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def machine_busy_fraction(seconds: float = 2.0) -> float:
    """How busy the machine is before the load starts (anything else running skews every number here)."""
    before = _machine_busy_seconds()
    time.sleep(seconds)
    return (_machine_busy_seconds() - before) / (seconds * (os.cpu_count() or 1))


def _cpu_snapshot(server_pids: list[int]) -> tuple:
    """(this process, each server process, PostgreSQL, the whole machine) CPU seconds, and the clock."""
    return (
        time.process_time(),
        [_cpu_seconds(pid) for pid in server_pids],
        _postgres_cpu_seconds(),
        _machine_busy_seconds(),
        time.perf_counter(),
    )


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def drive(
    base: str, token: str, paths: dict[str, str], clients: int, warmup: float, duration: float, server_pids: list[int]
) -> dict:
    """``clients`` closed-loop clients, each rotating through ``paths``; latencies of the ``duration`` after
    ``warmup``, errors, and the CPU seconds each party used meanwhile."""
    import httpx

    names = list(paths)
    latencies: dict[str, list[float]] = {e: [] for e in names}
    errors: dict[str, int] = dict.fromkeys(names, 0)
    error_kinds: dict[str, int] = {}
    measuring = asyncio.Event()
    # One AsyncClient (one keep-alive connection) per simulated client, not one pool of ``clients``
    # connections: httpcore re-checks every pooled connection on each request (``has_expired``/``is_idle``,
    # each asking sniffio for the async library), so a shared 50-connection pool cost ~9 ms of this
    # process's CPU per request, on the same two cores as the server.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    headers = {"Authorization": f"Bearer {token}"}
    sessions = [
        httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=httpx.Timeout(10.0))
        for _ in range(clients)
    ]
    stop_at = time.monotonic() + warmup + duration

    async def one_client(index: int) -> None:
        client, turn = sessions[index], index % len(names)
        while time.monotonic() < stop_at:
            endpoint = names[turn]
            turn = (turn + 1) % len(names)
            t0 = time.perf_counter()
            try:
                response = await client.get(paths[endpoint])
                ok = 200 <= response.status_code < 300
                kind = None if ok else f"HTTP {response.status_code}"
            except Exception as error:
                ok, kind = False, type(error).__name__
            elapsed = time.perf_counter() - t0
            if measuring.is_set():
                latencies[endpoint].append(elapsed)
                if not ok:
                    errors[endpoint] += 1
                    error_kinds[kind] = error_kinds.get(kind, 0) + 1

    try:
        tasks = [asyncio.create_task(one_client(i)) for i in range(clients)]
        await asyncio.sleep(warmup)
        measuring.set()
        cpu0 = _cpu_snapshot(server_pids)
        await asyncio.sleep(duration)
        measuring.clear()
        cpu1 = _cpu_snapshot(server_pids)
        await asyncio.gather(*tasks)
    finally:
        for client in sessions:
            await client.aclose()
    wall = cpu1[4] - cpu0[4]
    every = [v for values in latencies.values() for v in values]
    per_process = [after - before for before, after in zip(cpu0[1], cpu1[1])]
    client_cpu, postgres_cpu, machine_cpu = cpu1[0] - cpu0[0], cpu1[2] - cpu0[2], cpu1[3] - cpu0[3]
    server_cpu = sum(per_process)
    result = {
        "p50_ms": _percentile(every, 50) * 1e3,
        "p99_ms": _percentile(every, 99) * 1e3,
        "rps": len(every) / wall,
        "errors": sum(errors.values()),
        "requests": len(every),
        "mean_ms": sum(every) / len(every) * 1e3 if every else float("nan"),
        "max_ms": max(every) * 1e3 if every else float("nan"),
    }
    for endpoint in names:
        result[f"{endpoint}_p50_ms"] = _percentile(latencies[endpoint], 50) * 1e3
        result[f"{endpoint}_p99_ms"] = _percentile(latencies[endpoint], 99) * 1e3
        result[f"{endpoint}_errors"] = errors[endpoint]
    per = 1e3 / len(every) if every else float("nan")
    result.update(
        {
            "cpu_load_generator_s": client_cpu,
            "cpu_server_s": server_cpu,
            "cpu_postgres_s": postgres_cpu,
            "cpu_other_processes_s": machine_cpu - client_cpu - server_cpu - postgres_cpu,
            "cpu_available_s": wall * (os.cpu_count() or 1),
            "cpu_server_processes_s": per_process,
            "server_cpu_ms_per_request": server_cpu * per,
            "postgres_cpu_ms_per_request": postgres_cpu * per,
            "load_generator_cpu_ms_per_request": client_cpu * per,
            "error_kinds": error_kinds,
        }
    )
    return result


ENDPOINTS = ("study", "trials", "best")
HEADLINE_KEYS = (
    "cpu_ratio_to_healthz",
    "solo_worst_p99_ms",
    "solo_worst_endpoint",
    "p50_ms",
    "p99_ms",
    "rps",
    "errors",
    "requests",
    "mean_ms",
    "max_ms",
    "littles_law_mean_ms",
    *(f"{e}_{q}_ms" for e in ENDPOINTS for q in ("p50", "p99")),
    "server_cpu_ms_per_request",
    "postgres_cpu_ms_per_request",
    "load_generator_cpu_ms_per_request",
)
CPU_KEYS = (
    "cpu_load_generator_s",
    "cpu_server_s",
    "cpu_server_processes_s",
    "cpu_postgres_s",
    "cpu_other_processes_s",
    "cpu_available_s",
)
SUMMARY_KEYS = ("p50_ms", "p99_ms", "rps", "errors", "server_cpu_ms_per_request", "postgres_cpu_ms_per_request")


async def run_load(base: str, token: str, study_id: int, args, server_pids: list[int]) -> dict:
    paths = dict(
        zip(
            ENDPOINTS,
            (
                f"/api/v1/studies/{study_id}",
                f"/api/v1/studies/{study_id}/trials?limit=50",
                f"/api/v1/studies/{study_id}/best",
            ),
        )
    )
    main = await drive(base, token, paths, args.clients, args.warmup, args.duration, server_pids)
    print(
        f"load: {main['requests']} requests in {args.duration:.0f} s ({main['rps']:.0f}/s), p50 {main['p50_ms']:.1f} ms, "
        f"p99 {main['p99_ms']:.1f} ms, {main['errors']} errors; CPU s: load generator {main['cpu_load_generator_s']:.1f}, "
        f"server {main['cpu_server_s']:.1f}, PostgreSQL {main['cpu_postgres_s']:.1f}, "
        f"other processes {main['cpu_other_processes_s']:.1f} of {main['cpu_available_s']:.0f}",
        flush=True,
    )
    result = {**main, "littles_law_mean_ms": args.clients / main["rps"] * 1e3 if main["rps"] else float("nan")}
    if args.solo > 0:  # one client at a time on every read endpoint: its own service time, no queueing
        every_read = {
            **paths,
            "studies": "/api/v1/studies",
            "trials_by_value": f"/api/v1/studies/{study_id}/trials?limit=50&sort=value",
            "trials_last_page": f"/api/v1/studies/{study_id}/trials?limit=50&offset={max(0, args.trials - 50)}",
            "spaces": "/api/v1/spaces",
        }
        solo = await drive(base, token, every_read, 1, 1.0, args.solo, server_pids)
        worst = max(every_read, key=lambda e: solo[f"{e}_p99_ms"])
        print(
            f"solo (1 client): p50 {solo['p50_ms']:.1f} ms, p99 {solo['p99_ms']:.1f} ms, {solo['rps']:.0f}/s; "
            f"worst endpoint {worst}: p99 {solo[f'{worst}_p99_ms']:.1f} ms",
            flush=True,
        )
        result["solo"] = {
            **{k: solo[k] for k in SUMMARY_KEYS},
            **{f"{e}_{q}_ms": solo[f"{e}_{q}_ms"] for e in every_read for q in ("p50", "p99")},
        }
        result["solo_worst_p99_ms"], result["solo_worst_endpoint"] = solo[f"{worst}_p99_ms"], worst
    if args.floor > 0:  # the same clients on the cheapest route (no auth, one query): the framework's own ceiling
        floor = await drive(base, token, {"healthz": "/healthz"}, args.clients, 1.0, args.floor, server_pids)
        print(
            f"floor (/healthz, {args.clients} clients): {floor['rps']:.0f}/s, p50 {floor['p50_ms']:.1f} ms, "
            f"p99 {floor['p99_ms']:.1f} ms",
            flush=True,
        )
        result["healthz"] = {k: floor[k] for k in SUMMARY_KEYS}
        result["cpu_ratio_to_healthz"] = main["server_cpu_ms_per_request"] / floor["server_cpu_ms_per_request"]
    return result


def marks_index_present(url: str) -> bool:
    from sqlalchemy import inspect

    from nas.store.db import get_engine

    return any(
        index["name"] == "ix_nas_trial_user_attributes_marked"
        for index in inspect(get_engine(url)).get_indexes("trial_user_attributes")
    )


if __name__ == "__main__":
    main()
