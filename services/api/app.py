"""The FastAPI application: routes under /api/v1, JSON errors a person can act on, the dashboard mounted."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path, get_route_path

from nas import __version__
from nas.errors import failure_message, first_line
from nas.store.db import upgrade
from nas.store.outage import DatabaseUnavailable, is_outage
from services.api.limits import BodyLimitMiddleware
from services.api.routes import health, spaces, studies
from services.api.schemas import ValidationErrorBody
from services.settings import Settings

log = logging.getLogger("nas.api")
API_PREFIX = "/api/v1"
RETRY_AFTER_S = 5
HTTP_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")


def create_app(settings: Settings | None = None, mount_dashboard: bool = True) -> FastAPI:
    settings = settings or Settings()
    upgrade(settings.database_url)  # Optuna's tables and `alembic upgrade head` before the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        from nas.store.db import get_engine

        get_engine(settings.database_url).dispose()

    app = FastAPI(
        title="ssl-nas",
        version=__version__,
        lifespan=lifespan,
        description="Neural architecture search for self-supervised backbones: submit searches, follow "
        "their trials, read the best architectures. Authenticate with a bearer token.",
    )
    app.state.settings = settings
    app.state.latency = health.LatencyHistogram()
    app.add_middleware(health.RequestTimer, histogram=app.state.latency)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)

    app.include_router(studies.router, prefix=API_PREFIX)
    app.include_router(spaces.router, prefix=API_PREFIX)
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(health.router, include_in_schema=False)  # /healthz and /metrics at the root too
    _install_error_handlers(app)
    _document_validation_errors(app)
    if mount_dashboard:
        _mount_dashboard(app, settings)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405 and (allowed := _allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allowed}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"path": ".".join(str(p) for p in error.get("loc", ())), "message": error.get("msg", "")}
            for error in exc.errors()
        ]
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        return JSONResponse({"detail": f"invalid request: {summary}", "errors": errors}, status_code=422)

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        """A database that cannot be reached is a 503 the client may retry; any other database error a 500."""
        if is_outage(exc):
            log.warning("database unreachable on %s %s: %s", request.method, request.url.path, first_line(exc))
            return JSONResponse(
                {"detail": "the database is unreachable right now; nothing was changed, retry in a few seconds"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return await unexpected(request, exc)

    # Registered by class, these run inside Starlette's ExceptionMiddleware: the answer is sent and nothing is
    # re-raised (a handler for Exception itself runs in ServerErrorMiddleware, which logs the traceback again).
    for database_error_class in (SQLAlchemyError, StorageInternalError, DatabaseUnavailable):
        app.add_exception_handler(database_error_class, database_error)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        message = failure_message(exc, log, f"unhandled error on {request.method} {request.url.path}")
        return JSONResponse(
            {"detail": f"internal error: {message}; the request changed nothing it could not finish"},
            status_code=500,
        )


def _allowed_methods(request: Request) -> str | None:
    """Every method the OpenAPI document gives the request's path, for the ``Allow`` of a 405 (RFC 9110).
    Starlette lists only the methods of the first route whose path matched, so ``OPTIONS /studies`` said
    ``POST`` and hid ``GET``. Where a literal path and a template both match (``/spaces/validate`` and
    ``/spaces/{name}``) the literal one is the resource. None for paths outside the document."""
    path, documented = get_route_path(request.scope), request.app.openapi().get("paths", {})
    matches = [(template.count("{"), template) for template in documented if compile_path(template)[0].match(path)]
    if not matches:
        return None
    return ", ".join(method.upper() for method in documented[min(matches)[1]] if method.upper() in HTTP_METHODS)


def _document_validation_errors(app: FastAPI) -> None:
    """The handler above answers every 422 as ``ValidationErrorBody``; make the OpenAPI document say so too,
    in place of FastAPI's default ``HTTPValidationError`` (a list under ``detail``), which this app never sends."""
    default_ref = "#/components/schemas/HTTPValidationError"
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        body = ValidationErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(ValidationErrorBody.__name__, body)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                response = operation.get("responses", {}).get("422")
                content = (response or {}).get("content", {}).get("application/json", {})
                if content.get("schema", {}).get("$ref") == default_ref:
                    response["description"] = "the request is invalid: every problem with its path"
                    content["schema"] = {"$ref": f"#/components/schemas/{ValidationErrorBody.__name__}"}
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


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

    app.mount(
        "/dashboard",
        build_dashboard_app(
            settings.database_url,
            lambda token: resolve_token(settings.database_url, token, settings.admin_token),
            visible_study_names,
            settings.dashboard_max_trials,
        ),
    )
