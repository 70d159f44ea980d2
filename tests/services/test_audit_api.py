"""Audits over REST: POST starts one that a runner picks up like a study; GET shows its status and report."""

from __future__ import annotations

import pytest

from tests.services.conftest import TINY_TEXT, token_for
from tests.services.test_api import run_queue, submit

pytestmark = pytest.mark.ray


def test_audit__runs_through_a_runner_and_reports_to_its_owner_only(ray_cluster, sqlite_server):
    alice = sqlite_server.client(token_for(sqlite_server, "alice"))
    bob = sqlite_server.client(token_for(sqlite_server, "bob"))
    study = submit(alice, name="audited", overrides={**TINY_TEXT, "search.trials": 3, "search.scheduler": "none"})
    url = f"/api/v1/studies/{study['id']}/audit"
    assert alice.post(url).status_code == 409  # still queued: nothing finished to audit
    run_queue(sqlite_server)
    assert alice.get(url).status_code == 404  # no audit yet
    assert bob.post(url, json={"top": 1}).status_code == 404
    assert alice.post(url, json={"top": 0}).status_code == 422
    assert alice.post(url, json={"factor": 1000}).status_code == 422

    started = alice.post(url, json={"top": 1, "random": 1, "factor": 2})
    assert started.status_code == 201, started.text
    audit = started.json()
    assert audit["study"]["status"] == "queued" and audit["study"]["kind"] == "audit"
    assert audit["study"]["parent_id"] == study["id"] and audit["study"]["name"] == "audited-audit"
    assert len(audit["trials"]) == 2 and audit["factor"] == 2
    assert alice.post(url).status_code == 409  # one audit at a time

    assert run_queue(sqlite_server) == 1
    done = alice.get(url).json()
    assert done["study"]["status"] == "succeeded" and done["study"]["counts"]["complete"] == 2
    result = done["result"]
    assert result["finished"] == 2 and {t["parent_trial"] for t in result["trials"]} == set(audit["trials"])
    first, second = result["trials"]
    in_order = (first["proxy"] < second["proxy"]) == (first["long_run"] < second["long_run"])
    assert result["proxy"]["kendall_tau"] == (1.0 if in_order else -1.0)  # two architectures: in order or not
    assert all(t["long_run"] > 0 and t["params"] > 0 for t in result["trials"])
    assert bob.get(url).status_code == 404
    audit_id = done["study"]["id"]
    assert alice.get(f"/api/v1/studies/{audit_id}").json()["kind"] == "audit"
    assert alice.post(f"/api/v1/studies/{audit_id}/audit").status_code == 409  # an audit is not audited
    assert (
        alice.patch(f"/api/v1/studies/{audit_id}", json={"trials": 5}).status_code == 409
    )  # its plan fixes its trials
    trials = alice.get(f"/api/v1/studies/{audit_id}/trials").json()
    assert trials["count"] == 2 and all(t["metrics"]["step"] == 20 for t in trials["data"])  # 2x the 10-step proxy
