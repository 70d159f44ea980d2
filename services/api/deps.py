"""FastAPI dependencies: settings, a database session per request, the caller's principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from nas.store.db import session_scope
from services.auth import Principal, resolve_token
from services.settings import Settings

bearer = HTTPBearer(auto_error=False, description="a token from `nas tokens create --name NAME`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


# scope="function": the session commits when the route returns, before the response is sent. FastAPI's default
# ends a yield dependency after sending, so a client could read its 201 before the row was committed (a GET
# right after answered 404 under load), and a failed commit would follow a success reply.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_principal(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    principal = resolve_token(
        settings.database_url, credentials.credentials if credentials else None, settings.admin_token
    )
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="a valid bearer token is required (Authorization: Bearer <token>); "
            "create one with `nas tokens create --name NAME`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
