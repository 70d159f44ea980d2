"""optuna-dashboard under /dashboard over a real uvicorn server: tokens, read-only, ownership, bad input."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import optuna
import pytest

from services.auth import Principal

TOKENS = {"tok-alice": Principal("alice"), "tok-bob": Principal("bob"), "tok-admin": Principal("admin", is_admin=True)}
OWNED = {"alice": {"alice-one", "alice-two", "alice-big"}, "bob": {"bob-one"}}
MAX_TRIALS = 2  # the mount's limit here; "-big" studies get one trial more
ALL_STUDIES = set().union(*OWNED.values())


@dataclass
class Dashboard:
    url: str
    storage_url: str
    study_ids: dict[str, int]

    def client(self, token: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)


def make_studies(storage_url: str) -> dict[str, int]:
    """Real Optuna studies with a couple of told trials each (one more in a "-big" one); name -> study id."""
    ids = {}
    for name in sorted(ALL_STUDIES):
        study = optuna.create_study(storage=storage_url, study_name=name)
        for value in (1.0, 0.5, 0.25)[: MAX_TRIALS + name.endswith("-big")]:
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            study.tell(trial, value)
        ids[name] = study._study_id
    return ids


def make_app(storage_url: str):
    from fastapi import FastAPI

    from services.dashboard import build_dashboard_app

    app = FastAPI()
    app.mount(
        "/dashboard",
        build_dashboard_app(
            storage_url, TOKENS.get, lambda p: None if p.is_admin else OWNED.get(p.name, set()), MAX_TRIALS
        ),
    )
    return app


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory) -> Iterator[Dashboard]:
    import uvicorn

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'optuna.db'}"
    study_ids = make_studies(storage_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(storage_url), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.02)
        yield Dashboard(f"http://127.0.0.1:{port}", storage_url, study_ids)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def listed(client: httpx.Client) -> set[str]:
    response = client.get("/dashboard/api/studies")
    assert response.status_code == 200, response.text
    assert int(response.headers["content-length"]) == len(response.content)
    return {s["study_name"] for s in response.json()["study_summaries"]}


def assert_json_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_study_list_shows_only_own_studies_for_non_admin_and_all_for_admin(dashboard):
    with (
        dashboard.client("tok-alice") as alice,
        dashboard.client("tok-bob") as bob,
        dashboard.client("tok-admin") as admin,
    ):
        assert listed(alice) == OWNED["alice"]
        assert listed(bob) == OWNED["bob"]
        assert listed(admin) == ALL_STUDIES
        head = alice.head("/dashboard/api/studies")  # HEAD must not leak the unfiltered length
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == alice.get("/dashboard/api/studies").headers["content-length"]


def test_missing_or_wrong_token_is_401_with_instructions(dashboard):
    with dashboard.client() as anonymous, dashboard.client("not-a-token") as wrong:
        for response in (
            anonymous.get("/dashboard/api/studies"),
            anonymous.get("/dashboard/"),
            wrong.get("/dashboard/api/studies"),
            anonymous.delete("/dashboard/api/studies/1"),
        ):
            detail = assert_json_error(response, 401)["detail"]
            assert "Bearer" in detail and "/dashboard/login?token=" in detail
        assert_json_error(anonymous.get("/dashboard/login", params={"token": "not-a-token"}), 401)
        assert_json_error(anonymous.get("/dashboard/login"), 401)


def test_login_sets_cookie_and_the_cookie_alone_opens_the_json_api(dashboard):
    with dashboard.client(follow_redirects=False) as browser:
        response = browser.get("/dashboard/login", params={"token": "tok-alice"})
        assert response.status_code == 303 and response.headers["location"] == "/dashboard/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("nas_token=tok-alice;")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/dashboard" in cookie
        assert "authorization" not in browser.headers
        assert listed(browser) == OWNED["alice"]
        assert browser.get("/dashboard/").status_code == 200


def test_delete_through_dashboard_is_refused_and_study_stays(dashboard):
    bob_id = dashboard.study_ids["bob-one"]
    with dashboard.client("tok-admin") as admin:
        detail = assert_json_error(admin.delete(f"/dashboard/api/studies/{bob_id}"), 403)["detail"]
        assert "read-only" in detail
    assert optuna.load_study(study_name="bob-one", storage=dashboard.storage_url)._study_id == bob_id
    names = {s.study_name for s in optuna.get_all_study_summaries(dashboard.storage_url)}
    assert names == ALL_STUDIES


def test_other_write_routes_are_refused(dashboard):
    own_id = dashboard.study_ids["alice-one"]
    trial_id = optuna.load_study(study_name="alice-one", storage=dashboard.storage_url).trials[0]._trial_id
    with dashboard.client("tok-alice") as alice:
        writes = [
            alice.post("/dashboard/api/studies", json={"study_name": "new", "directions": ["minimize"]}),
            alice.post(f"/dashboard/api/studies/{own_id}/rename", json={"study_name": "renamed"}),
            alice.put(f"/dashboard/api/studies/{own_id}/note", json={"version": 0, "body": "hi"}),
            alice.post(f"/dashboard/api/trials/{trial_id}/tell", json={"state": "Fail"}),
            alice.patch(f"/dashboard/api/studies/{own_id}", json={}),
        ]
        for response in writes:
            assert "read-only" in assert_json_error(response, 403)["detail"]
    names = {s.study_name for s in optuna.get_all_study_summaries(dashboard.storage_url)}
    assert names == ALL_STUDIES
    study = optuna.load_study(study_name="alice-one", storage=dashboard.storage_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_another_owners_study_by_id_is_404_and_own_is_200(dashboard):
    bob_id, own_id = dashboard.study_ids["bob-one"], dashboard.study_ids["alice-one"]
    with dashboard.client("tok-alice") as alice, dashboard.client("tok-admin") as admin:
        for path in (
            f"/api/studies/{bob_id}",
            f"/api/studies/{bob_id}/param_importances",
            f"/csv/{bob_id}",
            f"/api/studies/{bob_id}/plot/slice",
        ):
            assert_json_error(alice.get("/dashboard" + path), 404)
        detail = alice.get(f"/dashboard/api/studies/{own_id}")
        assert detail.status_code == 200 and detail.json()["name"] == "alice-one"
        assert len(detail.json()["trials"]) == 2
        assert alice.get(f"/dashboard/csv/{own_id}").status_code == 200
        assert admin.get(f"/dashboard/api/studies/{bob_id}").json()["name"] == "bob-one"


@pytest.mark.parametrize(
    "path",
    [
        "/api/studies/abc",
        "/api/studies/1.5",
        "/api/studies/99999999999999999999999",
        "/api/studies/424242",
        "/api/studies/-1",
        "/csv/abc",
        "/artifacts/abc/x",
        "/api/studies/{own}?after=x",
        "/api/studies/{own}?after=-3",
        "/api/studies/{own}/plot/nonsense",
        "/static/does-not-exist.js",
        "/api/no-such-route",
        "/static/..%2F_app.py",
    ],
)
def test_garbage_input_is_4xx_not_500(dashboard, path):
    with dashboard.client("tok-admin") as admin:
        response = admin.get("/dashboard" + path.format(own=dashboard.study_ids["alice-one"]))
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")


def test_dashboard_page_loads_under_the_mount(dashboard):
    with dashboard.client("tok-alice") as alice:
        for path in ("/dashboard/", f"/dashboard/studies/{dashboard.study_ids['alice-one']}"):
            page = alice.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "<html" in page.text and 'src="/dashboard/static/bundle.js"' in page.text
            assert int(page.headers["content-length"]) == len(page.content)
        shim = alice.get("/dashboard/_nas/prefix.js")
        assert shim.status_code == 200 and '"/dashboard"' in shim.text
        assert int(shim.headers["content-length"]) == len(shim.content)
        bundle = alice.head("/dashboard/static/bundle.js")
        assert bundle.status_code == 200 and "javascript" in bundle.headers["content-type"]


def test_a_study_past_the_trial_limit_is_refused_with_the_rest_api_named(dashboard):
    """optuna-dashboard loads every trial of a study it shows, in the API's process; past the limit it is not asked."""
    big, small = dashboard.study_ids["alice-big"], dashboard.study_ids["alice-one"]
    with dashboard.client("tok-alice") as alice, dashboard.client("tok-bob") as bob:
        for path in (f"/dashboard/api/studies/{big}", f"/dashboard/csv/{big}", f"/dashboard/api/studies/{big}/plot/x"):
            detail = assert_json_error(alice.get(path), 422)["detail"]
            assert f"has {MAX_TRIALS + 1} trials, over the {MAX_TRIALS}" in detail and "/api/v1/studies" in detail
        assert alice.get(f"/dashboard/api/studies/{small}").status_code == 200
        assert "alice-big" in listed(alice)  # still listed: only loading it is refused
        assert_json_error(bob.get(f"/dashboard/api/studies/{big}"), 404)  # another owner's: not found, not its size
