"""A study submitted over REST reads only the built-in data sets, or files inside NAS_DATA_ROOTS: paths, ``..`` and
symbolic links that lead out are refused without the server's file system answering for them."""

from __future__ import annotations

import os
import shutil

from services.runner import StudyRunner
from tests.conftest import SPACES
from tests.services.conftest import TINY_TEXT, start_server, token_for


def submit(client, source: str):
    body = {"space": "text-mlm-tiny", "overrides": {**TINY_TEXT, "data.source": source}}
    return client.post("/api/v1/studies", json=body)


def refusal(response) -> str:
    assert response.status_code == 422, response.text
    errors = {error["path"]: error["message"] for error in response.json()["errors"]}
    return errors["data.source"]


def test_data_source_over_rest__builtins_only_by_default_and_nothing_outside_the_data_roots(tmp_path, sqlite_url):
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "corpus").mkdir(parents=True)
    (allowed / "corpus" / "a.txt").write_text("some text to train on\n" * 50)
    secret.mkdir()
    (secret / "b.txt").write_text("not for the service\n" * 50)
    os.symlink(secret, allowed / "door")  # a link to a folder outside
    (allowed / "mixed").mkdir()
    (allowed / "mixed" / "fine.txt").write_text("inside\n" * 50)
    os.symlink(secret / "b.txt", allowed / "mixed" / "leak.txt")  # one file of a folder links outside

    default = start_server(sqlite_url)
    server = next(default)
    try:
        client = server.client(token_for(server, "alice"))
        assert submit(client, "builtin:python-docs").status_code == 201
        assert "reads only the built-in data sets" in refusal(submit(client, str(allowed / "corpus")))
    finally:
        next(default, None)

    rooted = start_server(f"sqlite:///{tmp_path / 'rooted.db'}", data_roots=str(allowed))  # none of the above
    server = next(rooted)
    try:
        client = server.client(token_for(server, "bob"))
        assert submit(client, str(allowed / "corpus")).status_code == 201
        assert submit(client, str(allowed / "corpus" / "*.txt")).status_code == 201
        for escape in (
            f"{allowed}/../secret",
            str(allowed / "door"),
            f"{allowed}/door/*.txt",
            "/etc/passwd",
            "/no/such",
        ):
            assert "is outside the folders this service may read" in refusal(submit(client, escape)), escape
        assert "leak.txt' is outside" in refusal(submit(client, str(allowed / "mixed")))
        assert "must be an absolute path" in refusal(submit(client, "corpus"))
        assert "must be an absolute path" in refusal(submit(client, "~/corpus"))
        space_text = (SPACES / "text-mlm-tiny.yaml").read_text()
        validated = client.post(
            "/api/v1/spaces/validate", json={"yaml": space_text, "overrides": {"data.source": str(secret)}}
        ).json()
        assert (
            not validated["valid"]
            and "is outside" in {e["path"]: e["message"] for e in validated["errors"]}["data.source"]
        )

        # A link swapped after submission: the runner checks the roots again before it reads a file.
        shutil.rmtree(allowed / "corpus")
        os.symlink(secret, allowed / "corpus")
        runner = StudyRunner(server.database_url, lease_s=20, heartbeat_s=1, poll_s=0.2, data_roots=(allowed,))
        assert runner.run_forever(exit_when_idle=True) == 2
        studies = client.get("/api/v1/studies").json()["data"]
        assert len(studies) == 2
        for study in studies:
            assert study["status"] == "failed" and "is outside the folders this service may read" in study["error"]
            assert study["counts"]["finished"] == 0
    finally:
        next(rooted, None)
