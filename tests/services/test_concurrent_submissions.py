"""Twenty submissions at once from five tokens while two runners work, on PostgreSQL: no study is lost, run twice,
or seen by another token, and unnamed submissions in the same second still get names of their own."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import pytest

from nas.store.trials import FINAL_STATUSES
from tests.services.conftest import TINY_TEXT, start_worker, stop_worker, token_for, wait_for, worker_logs
from tests.services.test_runners import studies, study_statuses, trial_states

pytestmark = [pytest.mark.ray, pytest.mark.postgres]
TOKENS = 5
PER_TOKEN = 4


def test_twenty_concurrent_submissions_from_five_tokens__each_runs_once_and_stays_its_owners(
    ray_cluster, postgres_server
):
    owners = [f"user{index}" for index in range(TOKENS)]
    clients = {owner: postgres_server.client(token_for(postgres_server, owner)) for owner in owners}
    one_trial = {**TINY_TEXT, "search.trials": 1}
    # Half named, half left to the service's default name (the same second for all of them).
    requests = [
        (owner, {"space": "text-mlm-tiny", "overrides": one_trial, **({"name": f"{owner}-{n}"} if n % 2 else {})})
        for owner, n in itertools.product(owners, range(PER_TOKEN))
    ]
    address = ray_cluster.get_runtime_context().gcs_address
    workers = [start_worker(postgres_server.database_url, ray_address=address) for _ in range(2)]

    def explain() -> str:
        return f"{study_statuses(postgres_server.database_url)}\n{worker_logs(*workers)}"

    try:
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            answers = list(pool.map(lambda r: (r[0], clients[r[0]].post("/api/v1/studies", json=r[1])), requests))
        assert [a.status_code for _, a in answers] == [201] * len(requests), [a.text for _, a in answers]
        ids_by_owner = {owner: {a.json()["id"] for o, a in answers if o == owner} for owner in owners}
        names = [a.json()["name"] for _, a in answers]
        assert len(set(names)) == len(requests)
        for owner, client in clients.items():  # while the runners work, each token sees its own four only
            listed = client.get("/api/v1/studies", params={"limit": 100}).json()
            assert {study["id"] for study in listed["data"]} == ids_by_owner[owner]
            other = next(iter(ids_by_owner[owners[(owners.index(owner) + 1) % TOKENS]]))
            assert client.get(f"/api/v1/studies/{other}").status_code == 404
        wait_for(
            lambda: all(row.status in FINAL_STATUSES for row in studies(postgres_server.database_url).values()),
            400,
            "twenty studies to end",
            explain=explain,
        )
    finally:
        for worker in workers:
            stop_worker(worker)
    rows = studies(postgres_server.database_url)
    assert len(rows) == len(requests)
    for name, row in rows.items():
        assert row.status == "succeeded" and row.attempts == 1, (name, row.status, row.attempts, row.error)
        assert trial_states(postgres_server.database_url, name) == ["COMPLETE"], name  # trained exactly once
    assert {row.owner for row in rows.values()} == set(owners)
