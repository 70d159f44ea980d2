"""FastAPI dependencies: settings, a database session per request, the caller's principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from nas.store.db import end_session, new_session
from services.auth import Principal, known_principal, resolve_token
from services.settings import Settings

bearer = HTTPBearer(auto_error=False, description="a token from `nas tokens create --name NAME`")


# The dependencies are ``async def`` where they do no I/O: FastAPI runs a plain ``def`` dependency in its thread
# pool, a hand-off each (three per request here, on every route), and the route itself is one more.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_session(settings: SettingsDep) -> AsyncIterator[Session]:
    """A session per request; it takes its connection at its first query, in the route's thread. Ending it (a
    commit, or a rollback on any error) is database I/O, so that runs in the thread pool."""
    session = new_session(settings.database_url)
    try:
        yield session
    except BaseException:
        await run_in_threadpool(end_session, session, False)
        raise
    await run_in_threadpool(end_session, session, True)


# scope="function": the session commits when the route returns, before the response is sent. FastAPI's default
# ends a yield dependency after sending, so a client could read its 201 before the row was committed (a GET
# right after answered 404 under load), and a failed commit would follow a success reply.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_principal(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    token = credentials.credentials if credentials else None
    principal = known_principal(settings.database_url, token, settings.admin_token) if token else None
    if principal is None:  # not seen in the last few seconds: the database decides
        principal = await run_in_threadpool(resolve_token, settings.database_url, token, settings.admin_token)
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail="a valid bearer token is required (Authorization: Bearer <token>); "
            "create one with `nas tokens create --name NAME`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
