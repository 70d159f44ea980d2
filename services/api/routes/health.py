"""/healthz and /metrics (Prometheus text format)."""

from __future__ import annotations

import time
from datetime import timedelta

from fastapi import APIRouter, Request, Response
from optuna.storages._rdb.models import TrialModel
from sqlalchemy import func, select, text
from starlette.types import ASGIApp, Receive, Scope, Send

from nas.controller.cluster import gcs_unreachable
from nas.store.models import Runner, Study, utcnow
from nas.store.trials import STUDY_STATUSES
from services.api.deps import SessionDep, SettingsDep
from services.api.schemas import Health

router = APIRouter(tags=["health"])


def ray_reachable(address: str | None) -> str:
    """Without RAY_ADDRESS each runner starts its own local Ray: nothing to reach. Else a TCP probe of the GCS."""
    if not address:
        return "local (each runner starts its own)"
    error = gcs_unreachable(address)
    return f"reachable at {address}" if error is None else f"unreachable at {address}: {error}"


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "degraded: the database or Ray cannot be reached"}},
)
def healthz(session: SessionDep, settings: SettingsDep, response: Response) -> Health:
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as error:  # the point of a health check is to report, not raise
        database = f"error: {type(error).__name__}"
    ray = ray_reachable(settings.ray_address)
    fresh = utcnow() - timedelta(seconds=settings.runner_lease_s)
    runners = 0
    if database == "ok":
        runners = session.scalar(select(func.count()).select_from(Runner).where(Runner.heartbeat_at >= fresh)) or 0
    healthy = database == "ok" and not ray.startswith("unreachable")
    if not healthy:
        response.status_code = 503
    return Health(status="ok" if healthy else "degraded", database=database, ray=ray, runners=runners)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    lines = ["# HELP nas_studies Studies by status.", "# TYPE nas_studies gauge"]
    by_status = dict(session.execute(select(Study.status, func.count()).group_by(Study.status)).all())
    lines += [f'nas_studies{{status="{s}"}} {by_status.get(s, 0)}' for s in STUDY_STATUSES]
    lines += [
        "# HELP nas_queue_depth Studies waiting for a runner.",
        "# TYPE nas_queue_depth gauge",
        f"nas_queue_depth {by_status.get('queued', 0)}",
    ]
    lines += ["# HELP nas_trials Trials of all studies by state.", "# TYPE nas_trials gauge"]
    for state, count in session.execute(select(TrialModel.state, func.count()).group_by(TrialModel.state)).all():
        lines.append(f'nas_trials{{state="{state.name}"}} {count}')
    lines += [
        "# HELP nas_runner_heartbeat_age_seconds Seconds since each runner's last heartbeat.",
        "# TYPE nas_runner_heartbeat_age_seconds gauge",
    ]
    now = utcnow()
    for runner in session.scalars(select(Runner)):
        beat = runner.heartbeat_at if runner.heartbeat_at.tzinfo else runner.heartbeat_at.replace(tzinfo=now.tzinfo)
        lines.append(f'nas_runner_heartbeat_age_seconds{{runner="{runner.id}"}} {(now - beat).total_seconds():.3f}')
    lines += request.app.state.latency.exposition()
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


class LatencyHistogram:
    """Request latency by route, as a Prometheus histogram (no client library needed for one metric)."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = {}

    def observe(self, method: str, route: str, seconds: float) -> None:
        key = (method, route)
        counts = self._counts.setdefault(key, [0] * (len(self.BUCKETS) + 1))
        for index, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                counts[index] += 1
        counts[-1] += 1
        self._sums[key] = self._sums.get(key, 0.0) + seconds

    def exposition(self) -> list[str]:
        lines = [
            "# HELP nas_http_request_duration_seconds Request latency.",
            "# TYPE nas_http_request_duration_seconds histogram",
        ]
        for (method, route), counts in sorted(self._counts.items()):
            labels = f'method="{method}",route="{route}"'
            for bound, count in zip(self.BUCKETS, counts):
                lines.append(f'nas_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}')
            lines.append(f'nas_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {counts[-1]}')
            lines.append(f"nas_http_request_duration_seconds_sum{{{labels}}} {self._sums[(method, route)]:.6f}")
            lines.append(f"nas_http_request_duration_seconds_count{{{labels}}} {counts[-1]}")
        return lines


class RequestTimer:
    """ASGI middleware recording each request's latency under its route template. A plain ASGI wrapper: Starlette's
    ``BaseHTTPMiddleware`` (``app.middleware("http")``) costs a task group and a memory stream per request."""

    def __init__(self, app: ASGIApp, histogram: LatencyHistogram):
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:  # the router wrote the matched route into this same scope
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.observe(scope["method"], route, time.perf_counter() - start)
