"""optuna-dashboard mounted inside the NAS service: token-gated, read-only, and limited to the caller's studies.

The service mounts it with ``app.mount("/dashboard", build_dashboard_app(...))``. optuna-dashboard is a Bottle
(WSGI) app whose page and script assume they own the whole origin, so this module:

* adapts it to ASGI with a small buffered bridge (every answer is buffered so that JSON can be filtered; Starlette's
  ``WSGIMiddleware`` is deprecated and streams, which would not allow that);
* asks for a bearer token or a ``nas_token`` cookie (set by ``GET <mount>/login?token=...``) on every request;
* refuses every method but GET and HEAD, so nobody can rename, tell, annotate or delete a study through it;
* hides studies the caller may not see: the study list is filtered and any URL naming a study by id answers 404;
* serves the single-page app from the mount root, pointing its script at ``<mount>/static/`` and loading a tiny
  script first that sends the app's root-relative ``fetch("/api/...")`` calls and CSV links to ``<mount>/...``.

The page's client-side router has the prefix ``/dashboard`` built in, so the app must be mounted exactly there for
its in-page navigation to work; the API, static files and CSV downloads follow whatever the mount is.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio.to_thread
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from services.auth import Principal

COOKIE_NAME = "nas_token"
READ_METHODS = frozenset({"GET", "HEAD"})
LOGIN_PATH = "/login"
SHIM_PATH = "/_nas/prefix.js"
STUDIES_PATH = "/api/studies"
# First path segments that optuna-dashboard serves itself; anything else is a page of its single-page app.
SERVER_SEGMENTS = frozenset(
    {"api", "static", "csv", "artifacts", "favicon.ico", "incompatible-rdb-schema", "sql-profiler"}
)
# Every optuna-dashboard route that names a study puts its id right after one of these prefixes (see its _app.py
# and artifact/_backend.py); the id is captured as the next path segment, exactly as Bottle's router would see it.
STUDY_ID_ROUTE = re.compile(r"^/(?:api/studies|api/artifacts|artifacts|csv)/(?P<id>[^/]+)(?:/|$)")
ARTIFACT_PREFIXES = ("/api/artifacts/", "/artifacts/")  # study routes that serve a file, not the study's trials
STUDY_ID = re.compile(r"-?[0-9]{1,18}")  # what Bottle's int filter accepts, bounded so the database never overflows
NON_NEGATIVE_INT = re.compile(r"[0-9]{1,18}")
COOKIE_SAFE = re.compile(r"[A-Za-z0-9._~+/=-]{1,4096}")  # a token that can sit in a cookie unquoted
NO_BODY_STATUSES = frozenset({204, 304})
# Runs before the dashboard's script: its API client and CSV links use root-relative URLs ("/api/...").
SHIM_TEMPLATE = """(function () {
  var prefix = %s;
  var own = /^\\/(api|csv|artifacts|static)\\//;
  var originalFetch = window.fetch.bind(window);
  window.fetch = function (input, init) {
    if (typeof input === "string" && own.test(input)) { input = prefix + input; }
    return originalFetch(input, init);
  };
  document.addEventListener("click", function (event) {
    var link = event.target && event.target.closest ? event.target.closest("a[href]") : null;
    if (link && own.test(link.getAttribute("href"))) { link.setAttribute("href", prefix + link.getAttribute("href")); }
  }, true);
})();
"""


@dataclass(frozen=True)
class Reply:
    """A complete HTTP answer; everything is buffered because answers may be rewritten."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def build_dashboard_app(
    database_url: str,
    authenticate: Callable[[str | None], Principal | None],
    visible_study_names: Callable[[Principal], set[str] | None],
    max_trials: int | None = None,
) -> ASGIApp:
    """The ASGI app to mount at ``/dashboard``, over the Optuna studies stored at ``database_url``; studies of more
    than ``max_trials`` trials are refused (optuna-dashboard reads every trial of the study it shows)."""
    import optuna_dashboard

    from nas.store.db import optuna_storage

    storage = optuna_storage(database_url)
    return DashboardApp(optuna_dashboard.wsgi(storage), storage, authenticate, visible_study_names, max_trials)


class DashboardApp:
    """ASGI front of the dashboard: the policy lives in :meth:`respond`, which runs in a worker thread because
    authentication, the storage look-ups and the WSGI app itself all block."""

    def __init__(
        self,
        wsgi_app: Callable[..., Iterable[bytes]],
        storage: Any,
        authenticate: Callable[[str | None], Principal | None],
        visible_study_names: Callable[[Principal], set[str] | None],
        max_trials: int | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.storage = storage
        self.authenticate = authenticate
        self.visible_study_names = visible_study_names
        self.max_trials = max_trials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: the dashboard has none
            await send({"type": "websocket.close", "code": 1008})
            return
        environ = build_environ(scope)
        reply = await anyio.to_thread.run_sync(self.respond, environ)
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers],
            }
        )
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else reply.body})

    def respond(self, environ: dict[str, Any]) -> Reply:
        """Authenticate, apply the read-only and ownership rules, then ask optuna-dashboard and fix up its answer."""
        path, root = environ["PATH_INFO"], environ["SCRIPT_NAME"]
        if path == LOGIN_PATH:
            return self.login(environ)
        principal = self.authenticate(request_token(environ))
        if principal is None:
            return json_reply(
                401,
                {
                    "detail": f"authentication required: send 'Authorization: Bearer <token>', or open "
                    f"{root}{LOGIN_PATH}?token=<token> in a browser to get a session cookie"
                },
                [("WWW-Authenticate", "Bearer")],
            )
        if environ["REQUEST_METHOD"] not in READ_METHODS:
            return json_reply(
                403,
                {
                    "detail": "the dashboard is read-only here; change studies through the NAS API "
                    "(rename, tell, notes and deletion are refused)"
                },
            )
        if path == SHIM_PATH:
            shim = (SHIM_TEMPLATE % json.dumps(root)).encode()
            headers = [("Content-Type", "text/javascript; charset=utf-8"), ("Cache-Control", "no-cache")]
            return finish(Reply(200, headers, shim), environ)
        refusal = (
            self.check_study_access(path, principal)
            or self.check_study_size(path)
            or check_query(path, environ["QUERY_STRING"])
        )
        if refusal is not None:
            return refusal
        is_page = is_page_path(path)
        reply = json_errors(call_wsgi(self.wsgi_app, dashboard_environ(environ, is_page)))
        if is_page and reply.status == 200:
            reply = rewrite_page(reply, root)
        elif path == STUDIES_PATH and reply.status == 200:
            reply = self.filter_study_list(reply, principal)
        return finish(reply, environ)

    def login(self, environ: dict[str, Any]) -> Reply:
        """Exchange ``?token=`` for an HttpOnly cookie scoped to the mount, so a browser can use the dashboard."""
        root = environ["SCRIPT_NAME"]
        token = (parse_qs(environ["QUERY_STRING"]).get("token") or [None])[0]
        if environ["REQUEST_METHOD"] not in READ_METHODS or not token or self.authenticate(token) is None:
            return json_reply(
                401,
                {
                    "detail": f"unknown or revoked token; open {root}{LOGIN_PATH}?token=<token> "
                    "with a valid NAS API token"
                },
            )
        if not COOKIE_SAFE.fullmatch(token):
            return json_reply(
                400,
                {"detail": "this token cannot be kept in a cookie; send it as 'Authorization: Bearer <token>' instead"},
            )
        secure = "; Secure" if environ["wsgi.url_scheme"] == "https" else ""
        cookie = f"{COOKIE_NAME}={token}; Path={root or '/'}; HttpOnly; SameSite=Lax{secure}"
        return Reply(
            303,
            [("Location", f"{root}/"), ("Set-Cookie", cookie), ("Cache-Control", "no-store"), ("Content-Length", "0")],
            b"",
        )

    def check_study_size(self, path: str) -> Reply | None:
        """422 for a study past ``max_trials`` on the routes that load all its trials (all that name a study but
        its artifacts). Runs after check_study_access, so the id is a visible study's."""
        match = STUDY_ID_ROUTE.match(path)
        if self.max_trials is None or match is None or path.startswith(ARTIFACT_PREFIXES):
            return None
        trials = self.storage.get_n_trials(int(match.group("id")))
        if trials <= self.max_trials:
            return None
        return json_reply(
            422,
            {
                "detail": f"this study has {trials} trials, over the {self.max_trials} the dashboard is allowed to load "
                "(NAS_DASHBOARD_MAX_TRIALS; it reads every trial into the API's memory); read it through the REST API "
                "instead: GET /api/v1/studies, then the study's /trials (paged, by number or by value) and /best"
            },
        )

    def check_study_access(self, path: str, principal: Principal) -> Reply | None:
        """404 unless the study named in the URL exists and the principal may see it (no hint which of the two)."""
        match = STUDY_ID_ROUTE.match(path)
        if match is None:
            return None
        raw_id = match.group("id")
        not_found = json_reply(404, {"detail": f"study {raw_id!r} not found"})
        if not STUDY_ID.fullmatch(raw_id):
            return not_found
        try:
            name = self.storage.get_study_name_from_id(int(raw_id))
        except KeyError:
            return not_found
        visible = self.visible_study_names(principal)
        return None if visible is None or name in visible else not_found

    def filter_study_list(self, reply: Reply, principal: Principal) -> Reply:
        """Drop other owners' studies from ``GET /api/studies`` (``{"study_summaries": [{"study_name": ...}]}``)."""
        visible = self.visible_study_names(principal)
        if visible is None:
            return reply
        try:
            payload = json.loads(reply.body)
            payload["study_summaries"] = [s for s in payload["study_summaries"] if s.get("study_name") in visible]
        except (ValueError, KeyError, TypeError, AttributeError):
            return json_reply(502, {"detail": "unexpected study list from optuna-dashboard"})
        return Reply(reply.status, reply.headers, json.dumps(payload).encode())


def request_token(environ: dict[str, Any]) -> str | None:
    """The bearer token, else the session cookie set by the login route."""
    scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return cookie_parser(environ.get("HTTP_COOKIE", "")).get(COOKIE_NAME) or None


def check_query(path: str, query_string: str) -> Reply | None:
    """optuna-dashboard answers 500 to ``/api/studies/<id>?after=x``; catch that bad input first."""
    if not path.startswith(STUDIES_PATH + "/"):
        return None
    after = parse_qs(query_string).get("after")
    if after is not None and not NON_NEGATIVE_INT.fullmatch(after[-1]):
        return json_reply(400, {"detail": "'after' must be a non-negative integer"})
    return None


def is_page_path(path: str) -> bool:
    """Paths that belong to the single-page app (its client-side routes), not to optuna-dashboard's server."""
    return path.split("/")[1] not in SERVER_SEGMENTS


def dashboard_environ(environ: dict[str, Any], is_page: bool) -> dict[str, Any]:
    """The environ optuna-dashboard sees: its page lives at ``/dashboard...``, HEAD is asked as GET (so HEAD
    answers carry the filtered length), and the page is always fetched whole because it gets rewritten."""
    environ = dict(environ, REQUEST_METHOD="GET", **{"wsgi.input": io.BytesIO(b"")})
    environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")  # its static-file routes fail with 500 without one
    if is_page:
        environ["PATH_INFO"] = "/dashboard" + ("" if environ["PATH_INFO"] == "/" else environ["PATH_INFO"])
        for conditional in ("HTTP_RANGE", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_NONE_MATCH"):
            environ.pop(conditional, None)
    return environ


def rewrite_page(reply: Reply, root: str) -> Reply:
    """Point the page's root-relative script at the mount, loading the fetch shim before it."""
    html = reply.body.decode("utf-8")
    html = html.replace(
        '<script defer src="/static/',
        f'<script src="{root}{SHIM_PATH}"></script>\n    <script defer src="{root}/static/',
        1,
    )
    headers = [(k, v) for k, v in reply.headers if k.lower() not in ("last-modified", "etag", "accept-ranges")]
    return Reply(reply.status, headers + [("Cache-Control", "no-cache")], html.encode("utf-8"))


def finish(reply: Reply, environ: dict[str, Any]) -> Reply:
    """Recompute Content-Length for the buffered body and keep redirects inside the mount."""
    headers = [(k, v) for k, v in reply.headers if k.lower() != "content-length"]
    headers = [(k, mount_location(v, environ["SCRIPT_NAME"]) if k.lower() == "location" else v) for k, v in headers]
    if reply.status not in NO_BODY_STATUSES and reply.status >= 200:
        headers.append(("Content-Length", str(len(reply.body))))
    return Reply(reply.status, headers, reply.body)


def mount_location(location: str, root: str) -> str:
    """Bottle builds redirects from the host root (``/dashboard``, ``/incompatible-rdb-schema``); add the mount."""
    parts = urlsplit(location)
    if not root or parts.path == root or parts.path.startswith(root + "/"):
        return location
    return urlunsplit(parts._replace(path=root + parts.path))


def json_errors(reply: Reply) -> Reply:
    """Bottle answers unknown routes and missing files with HTML error pages; keep every error JSON."""
    content_type = next((v for k, v in reply.headers if k.lower() == "content-type"), "")
    if reply.status < 400 or content_type.startswith("application/json"):
        return reply
    return json_reply(reply.status, {"detail": f"{reply.status}: no such page or file in the dashboard"})


def json_reply(status: int, payload: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Reply:
    body = json.dumps(payload).encode()
    return Reply(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *(headers or [])], body
    )


def call_wsgi(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> Reply:
    """Run a WSGI app to completion and buffer its answer."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started["status"], started["headers"] = int(status.split(" ", 1)[0]), list(headers)
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Reply(started["status"], started["headers"], b"".join(chunks))


def build_environ(scope: Scope) -> dict[str, Any]:
    """A WSGI environ for an ASGI request: ``SCRIPT_NAME`` is the mount, ``PATH_INFO`` the rest (trailing slashes
    dropped, as optuna-dashboard does itself, so the rules here see the path its router will see)."""
    root = scope.get("root_path", "")
    path = scope["path"]
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    path = path.rstrip("/") or "/"
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root.encode("utf-8").decode("latin-1"),
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": (scope.get("client") or ("", 0))[0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        separator = "; " if key == "HTTP_COOKIE" else ","
        environ[key] = f"{environ[key]}{separator}{value}" if key in environ else value
    return environ


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop; answer lifespan events so the app also runs on its own under uvicorn."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
