"""Runner processes: atomic claims on PostgreSQL, and a study resumed after its runner is killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import optuna
import pytest
from sqlalchemy import select

from nas.space import load_space
from nas.store.db import optuna_storage, session_scope
from nas.store.models import Study
from nas.store.trials import FINAL_STATUSES, count_trials, finished
from services.api.crud import create_study
from services.api.schemas import StudyCreate
from services.auth import Principal
from tests.conftest import SPACES
from tests.services.conftest import TINY_TEXT, start_worker, stop_worker, wait_for, worker_logs

pytestmark = [pytest.mark.ray]
# Trials long enough (120 steps, a few seconds) for a runner to be killed or paused while one is training.
LONG_TRIALS = {**TINY_TEXT, "search.scheduler": "none", "proxy.steps": 120, "proxy.eval_every": 40}


def queue_study(url: str, name: str, overrides: dict) -> None:
    from nas.store.db import upgrade

    upgrade(url)
    space = load_space(SPACES / "text-mlm-tiny.yaml", overrides)
    with session_scope(url) as session:
        create_study(
            session, StudyCreate(space="text-mlm-tiny", name=name, overrides=overrides), space, Principal("alice")
        )


def studies(url: str) -> dict[str, Study]:
    with session_scope(url) as session:
        return {row.name: row for row in session.scalars(select(Study))}


def study_statuses(url: str) -> str:
    return "\n".join(f"{name}: {row.status} ({row.error})" for name, row in sorted(studies(url).items()))


def trial_states(url: str, name: str) -> list[str]:
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage(url))
    except KeyError:
        return []
    return [t.state.name for t in study.get_trials(deepcopy=False) if "infeasible" not in t.user_attrs]


@pytest.mark.postgres
def test_two_runners_on_postgresql__run_each_of_four_studies_exactly_once(ray_cluster, postgres_url):
    one_trial = {**TINY_TEXT, "search.trials": 1}
    for index in range(4):
        queue_study(postgres_url, f"queued-{index}", one_trial)
    address = ray_cluster.get_runtime_context().gcs_address
    workers = [start_worker(postgres_url, ray_address=address), start_worker(postgres_url, ray_address=address)]

    def explain() -> str:
        return f"{study_statuses(postgres_url)}\n{worker_logs(*workers)}"

    try:
        wait_for(
            lambda: all(s.status in FINAL_STATUSES for s in studies(postgres_url).values()),
            300,
            "four studies to end",
            explain=explain,
        )
        rows = studies(postgres_url)
        assert all(row.status == "succeeded" for row in rows.values()), explain()
    finally:
        for worker in workers:
            stop_worker(worker)
    assert len(rows) == 4
    for name, row in rows.items():
        assert row.attempts == 1, (name, row.attempts)
        assert trial_states(postgres_url, name) == ["COMPLETE"], name
    assert len({row.runner_id for row in rows.values()}) == 2  # both runners took part


def claimed(url: str, name: str) -> bool:
    return studies(url)[name].status == "running"


def training(url: str, name: str) -> bool:
    states = trial_states(url, name)
    return "COMPLETE" in states and "RUNNING" in states


@pytest.mark.parametrize(
    "moment", [pytest.param(claimed, id="first-seconds-of-its-claim"), pytest.param(training, id="mid-study")]
)
def test_kill_9_a_runner__a_second_runner_finishes_its_study(ray_cluster, sqlite_url, moment):
    budget = 4
    queue_study(
        sqlite_url,
        "survivor",
        {**LONG_TRIALS, "search.trials": budget},
    )
    address = ray_cluster.get_runtime_context().gcs_address
    first = start_worker(sqlite_url, "--lease", "4", "--heartbeat", "1", ray_address=address)
    try:
        wait_for(
            lambda: moment(sqlite_url, "survivor"),
            180,
            moment.__name__,
            interval=0.1,
            explain=lambda: worker_logs(first),
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        stop_worker(first)  # only removes its log now
    assert studies(sqlite_url)["survivor"].status == "running"  # nobody told the database
    second = start_worker(sqlite_url, "--lease", "4", "--heartbeat", "1", ray_address=address)
    try:
        wait_for(
            lambda: studies(sqlite_url)["survivor"].status in FINAL_STATUSES,
            300,
            "the study to end",
            explain=lambda: worker_logs(second),
        )
    finally:
        stop_worker(second)
    row = studies(sqlite_url)["survivor"]
    states = trial_states(sqlite_url, "survivor")
    assert row.status == "succeeded" and row.attempts == 2
    assert "RUNNING" not in states
    study = optuna.load_study(study_name="survivor", storage=optuna_storage(sqlite_url))
    # A killed trial is marked failed and lost: it does not use up the budget (nor would a duplicate sample,
    # which the resumed sampler may propose and which reuses an earlier result).
    trained = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED") and "duplicate_of" not in t.user_attrs]
    assert len(trained) == budget == finished(count_trials(study.trials))
    lost = [t for t in study.trials if t.user_attrs.get("lost")]
    assert all(t.state.name == "FAIL" and "runner stopped" in t.user_attrs["fail_reason"] for t in lost)
    if moment is training:
        assert lost


def holds_no_write_lock(sqlite_url: str) -> bool:
    """Whether another connection can take SQLite's one write lock within 2 s."""
    connection = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=2)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()


def pause_outside_a_write(process, sqlite_url: str) -> None:
    """SIGSTOP ``process`` at a moment it holds no write lock. A runner paused inside a write transaction keeps
    SQLite's single write lock and so stops every writer: a different fault from a runner whose lease runs out
    (the database a fleet of runners shares is PostgreSQL). If the stop lands inside one, let it finish and retry."""
    for _ in range(20):
        os.killpg(process.pid, signal.SIGSTOP)
        if holds_no_write_lock(sqlite_url):
            return
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.3)
    pytest.fail("the first runner held the write lock at each of 20 pauses")


def test_a_paused_runner_loses_its_claim__the_runner_that_took_over_finishes_and_the_first_writes_nothing(
    ray_cluster, sqlite_url
):
    budget = 4
    queue_study(
        sqlite_url,
        "contested",
        {**LONG_TRIALS, "search.trials": budget},
    )
    address = ray_cluster.get_runtime_context().gcs_address
    first = start_worker(sqlite_url, "--lease", "3", "--heartbeat", "1", ray_address=address)
    second = None
    try:
        wait_for(
            lambda: (
                "COMPLETE" in trial_states(sqlite_url, "contested")
                and "RUNNING" in trial_states(sqlite_url, "contested")
            ),
            180,
            "one finished and one running trial",
            explain=lambda: worker_logs(first),
        )
        pause_outside_a_write(first, sqlite_url)  # alive but silent: its lease runs out while it holds the study
        second = start_worker(sqlite_url, "--lease", "3", "--heartbeat", "1", ray_address=address)
        wait_for(
            lambda: studies(sqlite_url)["contested"].attempts == 2,
            120,
            "the second runner's claim",
            explain=lambda: worker_logs(first, second),
        )
        os.killpg(first.pid, signal.SIGCONT)  # it wakes up holding a study that is no longer its own
        wait_for(
            lambda: "claimed by another runner" in worker_logs(first),
            60,
            "the first runner to notice",
            explain=lambda: worker_logs(first, second),
        )
        wait_for(
            lambda: studies(sqlite_url)["contested"].status in FINAL_STATUSES,
            300,
            "the study to end",
            explain=lambda: worker_logs(first, second),
        )
        logs = worker_logs(first, second)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
        for worker in (first, second):
            if worker is not None:
                stop_worker(worker)
    row = studies(sqlite_url)["contested"]
    assert row.status == "succeeded" and row.attempts == 2 and row.runner_id != "", (row.status, row.error, logs)
    study = optuna.load_study(study_name="contested", storage=optuna_storage(sqlite_url))
    assert "RUNNING" not in {t.state.name for t in study.trials}
    assert finished(count_trials(study.trials)) == budget
    assert "Traceback" not in logs.split("--- worker")[1]  # the first runner stood down without an error
