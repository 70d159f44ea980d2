"""PostgreSQL stops mid-study, on a server of the test's own: a blip costs nothing, a long outage hands the study back
to the queue with its finished trials kept, and the API answers 503 (never a 500 or a traceback) meanwhile."""

from __future__ import annotations

import time

import optuna
import pytest

from nas.store.db import optuna_storage, upgrade
from nas.store.trials import FINAL_STATUSES, count_trials, finished
from tests.services.conftest import TINY_TEXT, start_server, start_worker, stop_worker, token_for, wait_for, worker_logs
from tests.services.test_runners import studies, trial_states

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
RETRY_S = 6  # the runner's NAS_DB_RETRY_S: longer than the blip, shorter than the outage
BLIP_S = 2
OUTAGE_S = 12


def trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=optuna_storage(url)).get_trials(deepcopy=False)


def answers_503_while_down(client, study_id: int) -> None:
    for path in ("/api/v1/studies", f"/api/v1/studies/{study_id}"):
        response = client.get(path)
        assert response.status_code == 503, (path, response.status_code, response.text)
        assert response.headers["Retry-After"] == "5"
        detail = response.json()["detail"]
        assert "database is unreachable" in detail and "Traceback" not in detail and len(detail) < 200
    assert client.get("/healthz").status_code == 503


def test_postgresql_restarts_mid_study__a_blip_costs_nothing_a_long_outage_requeues_and_resumes(
    ray_cluster, private_postgres
):
    url = private_postgres.url
    upgrade(url)
    budget = 5
    overrides = {**TINY_TEXT, "search.trials": budget, "search.scheduler": "none", "proxy.steps": 90}
    server_context = start_server(url)
    server = next(server_context)
    client = server.client(token_for(server, "alice"))
    created = client.post("/api/v1/studies", json={"space": "text-mlm-tiny", "name": "outage", "overrides": overrides})
    assert created.status_code == 201, created.text
    study_id = created.json()["id"]
    worker = start_worker(
        url,
        "--heartbeat",
        "1",
        ray_address=ray_cluster.get_runtime_context().gcs_address,
        env={"NAS_DB_RETRY_S": str(RETRY_S)},
    )

    def explain() -> str:
        return worker_logs(worker)

    def one_done_one_running() -> bool:
        states = trial_states(url, "outage")
        return "COMPLETE" in states and "RUNNING" in states

    try:
        # A blip shorter than the retries: the searcher and runner wait, nothing is lost or re-run.
        wait_for(one_done_one_running, 180, "one finished and one running trial", explain=explain)
        private_postgres.stop()
        answers_503_while_down(client, study_id)
        time.sleep(BLIP_S)
        private_postgres.start()
        wait_for(lambda: finished(count_trials(trials(url, "outage"))) >= 3, 180, "a third trial", explain=explain)
        row = studies(url)["outage"]
        assert row.status == "running" and row.attempts == 1, (row.status, row.error)
        assert not [t.number for t in trials(url, "outage") if t.user_attrs.get("lost")], explain()
        assert client.get(f"/api/v1/studies/{study_id}").status_code == 200  # the pool reconnected

        # An outage longer than the retries: the study goes back to the queue and the runner resumes it.
        wait_for(one_done_one_running, 120, "a running trial", explain=explain)
        kept = {t.number: t.values for t in trials(url, "outage") if t.state.name == "COMPLETE"}
        private_postgres.stop()
        answers_503_while_down(client, study_id)
        time.sleep(OUTAGE_S)
        private_postgres.start()
        wait_for(lambda: studies(url)["outage"].status in FINAL_STATUSES, 240, "the study to end", explain=explain)
    finally:
        stop_worker(worker)
        next(server_context, None)

    row = studies(url)["outage"]
    assert row.status == "succeeded" and row.attempts == 2, (row.status, row.attempts, row.error, explain())
    ended = trials(url, "outage")
    assert {t.number: t.values for t in ended if t.number in kept} == kept  # finished trials kept as they were
    assert "RUNNING" not in {t.state.name for t in ended}
    assert finished(count_trials(ended)) == budget  # every place in the budget trained once
    lost = [t for t in ended if t.user_attrs.get("lost")]  # cut short by the outage, trained again after it
    assert lost and all(t.state.name == "FAIL" and t.user_attrs.get("fail_reason") for t in lost)
