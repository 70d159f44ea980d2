"""The FastAPI application: routes under /api/v1, JSON errors a person can act on, the dashboard mounted."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nas import __version__
from nas.store.db import ensure_schema
from services.api.limits import BodyLimitMiddleware
from services.api.routes import health, spaces, studies
from services.settings import Settings

log = logging.getLogger("nas.api")
API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, mount_dashboard: bool = True) -> FastAPI:
    settings = settings or Settings()
    ensure_schema(settings.database_url)  # `alembic upgrade head` (and Optuna's tables) before the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        from nas.store.db import get_engine

        get_engine(settings.database_url).dispose()

    app = FastAPI(title="ssl-nas", version=__version__, lifespan=lifespan,
                  description="Neural architecture search for self-supervised backbones: submit searches, follow "
                              "their trials, read the best architectures. Authenticate with a bearer token.")
    app.state.settings = settings
    app.state.latency = health.LatencyHistogram()
    app.middleware("http")(health.timed(app.state.latency))
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)

    app.include_router(studies.router, prefix=API_PREFIX)
    app.include_router(spaces.router, prefix=API_PREFIX)
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(health.router, include_in_schema=False)  # /healthz and /metrics at the root too
    _install_error_handlers(app)
    if mount_dashboard:
        _mount_dashboard(app, settings)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"path": ".".join(str(p) for p in error.get("loc", ())), "message": error.get("msg", "")}
                  for error in exc.errors()]
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        return JSONResponse({"detail": f"invalid request: {summary}", "errors": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the request changed nothing it "
                                       "could not finish, see the server log"}, status_code=500)


def _mount_dashboard(app: FastAPI, settings: Settings) -> None:
    from sqlalchemy import select

    from nas.store.db import session_scope
    from nas.store.models import Study
    from services.auth import resolve_token
    from services.dashboard import build_dashboard_app

    def visible_study_names(principal):
        if principal.is_admin:
            return None
        with session_scope(settings.database_url) as session:
            return set(session.scalars(select(Study.name).where(Study.owner == principal.name)))

    app.mount("/dashboard", build_dashboard_app(settings.database_url, lambda token: resolve_token(settings.database_url, token),
                                                visible_study_names))
