"""The REST API over a real uvicorn server: submit -> runner -> succeeded -> best -> trials, auth, bad input."""

from __future__ import annotations

import threading
import time

import pytest

from services.runner import StudyRunner
from tests.services.conftest import TINY_TEXT, start_server, token_for, wait_for

pytestmark = pytest.mark.ray


def submit(client, **body):
    response = client.post("/api/v1/studies", json={"space": "text-mlm-tiny", "overrides": TINY_TEXT, **body})
    assert response.status_code == 201, response.text
    return response.json()


def run_queue(server, **kwargs) -> int:
    """A runner in this process (the main thread, as the Tune driver likes), until the queue is empty."""
    return StudyRunner(server.database_url, lease_s=20, heartbeat_s=1, poll_s=0.2).run_forever(
        exit_when_idle=True, **kwargs
    )


def check_whole_cycle(server):
    alice = server.client(token_for(server, "alice"))
    created = submit(alice, name="cycle")
    assert created["status"] == "queued" and created["counts"]["budget"] == 2 and created["owner"] == "alice"
    assert run_queue(server) == 1
    study = alice.get(f"/api/v1/studies/{created['id']}").json()
    assert study["status"] == "succeeded", study
    assert study["counts"]["finished"] == 2 and study["counts"]["running"] == 0
    assert study["started_at"] and study["finished_at"] and study["best"]["state"] == "COMPLETE"
    best = alice.get(f"/api/v1/studies/{created['id']}/best").json()
    assert not best["multi_objective"] and len(best["trials"]) == 1
    assert best["trials"][0]["architecture"]["num_layers"] == 1
    trials = alice.get(f"/api/v1/studies/{created['id']}/trials", params={"limit": 1}).json()
    assert trials["count"] == 2 and len(trials["data"]) == 1 and trials["data"][0]["number"] == 0
    complete = alice.get(
        f"/api/v1/studies/{created['id']}/trials", params={"state": "COMPLETE", "sort": "value"}
    ).json()["data"]
    values = [t["values"][0] for t in complete]
    assert values == sorted(values) and values[0] == best["trials"][0]["values"][0]
    assert all("flops" in t["metrics"] and t["params"] for t in complete)
    plot = alice.get(f"/api/v1/studies/{created['id']}/plots/history")
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert plot.content.startswith(b"\x89PNG")
    page = alice.get(f"/api/v1/studies/{created['id']}/plots/loss_vs_flops", params={"format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "plotly" in page.text
    pareto = alice.get(f"/api/v1/studies/{created['id']}/plots/pareto")
    assert pareto.status_code == 404 and "one objective" in pareto.json()["detail"]
    assert alice.get(f"/api/v1/studies/{created['id']}/plots/nope").status_code == 422
    assert (
        server.client(token_for(server, "bob")).get(f"/api/v1/studies/{created['id']}/plots/history").status_code == 404
    )
    listing = alice.get("/api/v1/studies", params={"status": "succeeded"}).json()
    assert listing["count"] == 1 and listing["data"][0]["name"] == "cycle"
    # The same study in the mounted optuna-dashboard, through the dashboard's own JSON API.
    dashboard = alice.get("/dashboard/api/studies")
    assert dashboard.status_code == 200
    assert [s["study_name"] for s in dashboard.json()["study_summaries"]] == ["cycle"]
    assert server.client(token_for(server, "bob")).get("/dashboard/api/studies").json()["study_summaries"] == []
    assert server.client().get("/dashboard/api/studies").status_code == 401


def test_whole_cycle__on_sqlite(ray_cluster, sqlite_server):
    check_whole_cycle(sqlite_server)


@pytest.mark.postgres
def test_whole_cycle__on_postgresql(ray_cluster, postgres_server):
    check_whole_cycle(postgres_server)


def test_auth__a_token_sees_only_its_own_studies(sqlite_server):
    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    bob = sqlite_server.client(token_for(sqlite_server, "bob"))
    admin = sqlite_server.client(token_for(sqlite_server, "root", admin=True))
    study = submit(alice, name="alices")
    assert bob.get(f"/api/v1/studies/{study['id']}").status_code == 404
    assert bob.post(f"/api/v1/studies/{study['id']}/cancel").status_code == 404
    assert bob.get(f"/api/v1/studies/{study['id']}/trials").status_code == 404
    assert bob.get("/api/v1/studies").json()["count"] == 0
    assert alice.get("/api/v1/studies").json()["count"] == 1
    assert admin.get(f"/api/v1/studies/{study['id']}").status_code == 200
    # A warm start may name only the caller's own studies (an admin's: any) of the same space.
    theirs = bob.post("/api/v1/studies", json={"space": "text-mlm-tiny", "name": "b", "warm_start": ["alices"]})
    assert theirs.status_code == 422 and theirs.json()["errors"][0]["path"] == "search.warm_start[0]"
    assert "no study named 'alices' of yours" in theirs.text
    other = {"space": "text-mlm-tiny", "overrides": {**TINY_TEXT, "proxy.steps": 20}, "warm_start": ["alices"]}
    assert "proxy.steps: 20 vs 10" in alice.post("/api/v1/studies", json=other).text
    seeded = submit(alice, name="seeded", warm_start=["alices"])
    assert seeded["counts"]["warm_started"] == 0  # copied when a runner starts it
    assert submit(admin, name="admin-seeded", warm_start=["alices"])["owner"] == "root"
    assert bob.get("/api/v1/studies").json()["count"] == 0 and alice.get("/api/v1/studies").json()["count"] == 2
    anonymous = sqlite_server.client()
    assert anonymous.get("/api/v1/studies").status_code == 401
    assert sqlite_server.client("nas_wrong").get("/api/v1/studies").status_code == 401
    assert "Bearer" in anonymous.get("/api/v1/studies").json()["detail"]


def test_auth__the_bootstrap_admin_token_of_the_settings_sees_every_study(sqlite_url):
    """Settings.admin_token (NAS_ADMIN_TOKEN) is an admin without a stored token; any other token is not."""
    for server in start_server(sqlite_url, admin_token="nas_bootstrap-secret"):
        study = submit(server.client(token_for(server, "alice")))
        admin = server.client("nas_bootstrap-secret")
        assert admin.get(f"/api/v1/studies/{study['id']}").status_code == 200
        assert admin.get("/api/v1/studies").json()["count"] == 1
        assert server.client("nas_bootstrap-secreT").get("/api/v1/studies").status_code == 401


def test_a_reply_comes_after_its_commit__a_slow_commit_delays_the_201_not_the_data(sqlite_server):
    """A client that reads right after its 201 must find what it created, however slowly the database commits."""
    from sqlalchemy import event

    from nas.store.db import get_engine

    engine = get_engine(sqlite_server.database_url)  # the server's engine: it runs in this process

    def slow_commit(connection):
        time.sleep(1.0)

    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    event.listen(engine, "commit", slow_commit)
    try:
        study = submit(alice, name="committed-first")
        assert alice.get(f"/api/v1/studies/{study['id']}").status_code == 200
    finally:
        event.remove(engine, "commit", slow_commit)


def test_bad_input__answers_4xx_with_a_message_and_writes_nothing(sqlite_server):
    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    invalid = alice.post("/api/v1/studies", json={"space_yaml": "name: x\nfamily: rnn\ntask: mlm\n"})
    assert invalid.status_code == 422
    paths = {e["path"] for e in invalid.json()["errors"]}
    assert {"family", "data.source", "architecture"} <= paths
    assert alice.post("/api/v1/studies", json={"space_yaml": "a: [\n"}).status_code == 422
    assert alice.post("/api/v1/studies", json={"space": "../../etc/passwd"}).status_code == 422
    assert alice.post("/api/v1/studies", json={"space": "text-mlm-tiny", "colour": 1}).status_code == 422
    assert alice.post("/api/v1/studies", json={"space": "text-mlm-tiny", "space_yaml": "x"}).status_code == 422
    absurd = alice.post("/api/v1/studies", json={"space": "text-mlm-tiny", "overrides": {"search.trials": 10**9}})
    assert absurd.status_code == 422 and "search.trials" in absurd.text
    huge = alice.post(
        "/api/v1/studies",
        content=b'{"space_yaml": "' + b"x" * 400_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert huge.status_code == 413 and "limit" in huge.json()["detail"]
    assert (
        alice.post("/api/v1/studies", content=b"{not json", headers={"Content-Type": "application/json"}).status_code
        == 422
    )
    assert alice.get("/api/v1/studies/999999").status_code == 404
    assert alice.get("/api/v1/studies/abc").status_code == 422
    assert alice.get("/api/v1/studies", params={"limit": 0}).status_code == 422
    assert alice.get("/api/v1/studies").json()["count"] == 0  # nothing half-written
    ok = submit(alice, name="dup")
    assert alice.post("/api/v1/studies", json={"space": "text-mlm-tiny", "name": "dup"}).status_code == 409
    assert alice.post(f"/api/v1/studies/{ok['id']}/resume").status_code == 409
    assert alice.patch(f"/api/v1/studies/{ok['id']}", json={"trials": 0}).status_code == 422
    unnamed = [submit(alice)["name"] for _ in range(3)]  # within a second: one default name, made unique
    assert len(set(unnamed)) == 3 and all(name.startswith("text-mlm-tiny-") for name in unnamed)


def test_spaces__list_get_and_validate(sqlite_server):
    client = sqlite_server.client(token_for(sqlite_server, "alice"))
    spaces = client.get("/api/v1/spaces").json()
    assert spaces["count"] == 6 and {"text-mlm-tiny", "vit-mae-small"} <= {s["name"] for s in spaces["data"]}
    one = client.get("/api/v1/spaces/vit-mae-tiny").json()
    assert one["family"] == "vit" and "architecture:" in one["yaml"]
    assert client.get("/api/v1/spaces/nope").status_code == 404
    result = client.post(
        "/api/v1/spaces/validate", json={"yaml": one["yaml"], "overrides": {"search.trials": 0}}
    ).json()
    assert not result["valid"] and result["errors"][0]["path"] == "search.trials"
    assert client.post("/api/v1/spaces/validate", json={"yaml": one["yaml"]}).json()["valid"]


def test_health_and_metrics(sqlite_server):
    client = sqlite_server.client()
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert client.get("/api/v1/healthz").status_code == 200
    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    submit(alice)
    metrics = client.get("/metrics").text
    assert 'nas_studies{status="queued"} 1' in metrics and "nas_queue_depth 1" in metrics
    assert "nas_http_request_duration_seconds_count" in metrics


def test_cancel_resume_and_budget_extension__change_trial_counts(ray_cluster, sqlite_server):
    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    slow = {**TINY_TEXT, "search.trials": 3, "proxy.steps": 120, "proxy.eval_every": 40, "search.scheduler": "none"}
    study = alice.post("/api/v1/studies", json={"space": "text-mlm-tiny", "overrides": slow}).json()
    url = f"/api/v1/studies/{study['id']}"

    def cancel_once_a_trial_runs():
        wait_for(lambda: alice.get(url).json()["counts"]["running"] >= 1, 120, "a running trial")
        response = alice.post(f"{url}/cancel")
        assert response.status_code == 200 and response.json()["cancel_requested"]

    canceller = threading.Thread(target=cancel_once_a_trial_runs)
    canceller.start()
    run_queue(sqlite_server)
    canceller.join(timeout=5)
    cancelled = alice.get(url).json()
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["counts"]["running"] == 0 and cancelled["counts"]["finished"] < 3
    failed_by_cancel = alice.get(f"{url}/trials", params={"state": "FAIL"}).json()["data"]
    assert failed_by_cancel and all(t["metrics"].get("fail_reason") == "cancelled" for t in failed_by_cancel)
    kept = cancelled["counts"]["finished"]

    assert alice.post(f"{url}/resume").json()["status"] == "queued"
    fast = alice.patch(url, json={"trials": 3})  # budget unchanged, still queued
    assert fast.status_code == 200 and fast.json()["status"] == "queued"
    run_queue(sqlite_server)
    resumed = alice.get(url).json()
    assert resumed["status"] == "succeeded" and resumed["counts"]["finished"] == 3
    counts = resumed["counts"]
    assert (
        alice.get(f"{url}/trials").json()["count"] - counts["infeasible"] - counts["lost"] == 3
    )  # kept ones not re-run
    assert counts["lost"] >= 1  # the trials the cancel cut short
    assert kept <= 3

    extended = alice.patch(url, json={"trials": 4}).json()
    assert extended["status"] == "queued" and extended["counts"]["budget"] == 4
    run_queue(sqlite_server)
    final = alice.get(url).json()
    assert final["status"] == "succeeded" and final["counts"]["finished"] == 4
    assert alice.patch(url, json={"trials": 2}).status_code == 409  # below the finished trials


def test_export__zip_of_the_best_trial_and_clear_errors(ray_cluster, sqlite_server, tmp_path):
    import io
    import zipfile

    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    study = submit(alice, name="zipme")
    url = f"/api/v1/studies/{study['id']}/export"
    assert alice.get(url).status_code == 409  # nothing finished yet
    run_queue(sqlite_server)
    response = alice.get(url)
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(response.content)).namelist())
    assert {"config.json", "model.safetensors", "tokenizer.json", "nas_provenance.json", "pretrain.yaml"} <= names
    assert alice.get(url, params={"trial": 999}).status_code == 404
    assert alice.get(url, params={"weights": "random"}).status_code == 422
    bob = sqlite_server.client(token_for(sqlite_server, "bob"))
    assert bob.get(url).status_code == 404
