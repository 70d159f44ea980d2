"""Bearer tokens: created once, stored hashed, resolved to a principal (owner name, admin flag).

A bootstrap admin token may come from ``NAS_ADMIN_TOKEN`` (Settings.admin_token); it is compared in constant time
and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select

from nas.errors import UserError
from nas.store.db import session_scope
from nas.store.models import ApiToken, utcnow

TOKEN_PREFIX = "nas_"
BOOTSTRAP_ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool = False

    def owns(self, owner: str | None) -> bool:
        return self.is_admin or owner == self.name


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(url: str, name: str, is_admin: bool = False) -> str:
    """A new token for ``name``; the plaintext is returned once and only its hash is kept."""
    name = name.strip()
    if not name or len(name) > 200:
        raise UserError("a token name must be 1-200 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(url) as session:
        session.add(ApiToken(name=name, token_hash=hash_token(token), is_admin=is_admin, created_at=utcnow()))
    return token


def known_principal(url: str, token: str, admin_token: str | None = None) -> Principal | None:
    """The bootstrap admin, or a token resolved less than CACHE_SECONDS ago; None if it takes the database to tell.
    No I/O, so the API answers it on its event loop."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal(BOOTSTRAP_ADMIN, is_admin=True)
    cached = _valid_tokens.get((url, hash_token(token)))
    return cached[1] if cached is not None and cached[0] > time.monotonic() else None


def resolve_token(url: str, token: str | None, admin_token: str | None = None) -> Principal | None:
    """The principal of a valid token. Valid tokens are remembered for CACHE_SECONDS, so a busy client costs
    one database look-up per few seconds, not one per request (a revoked token works that much longer)."""
    if not token:
        return None
    known = known_principal(url, token, admin_token)
    if known is not None:
        return known
    key = (url, hash_token(token))
    with session_scope(url) as session:
        row = session.scalar(select(ApiToken).where(ApiToken.token_hash == key[1], ApiToken.revoked.is_(False)))
        principal = Principal(row.name, row.is_admin) if row else None
    if principal is not None:
        if len(_valid_tokens) > 4096:
            _valid_tokens.clear()
        _valid_tokens[key] = (time.monotonic() + CACHE_SECONDS, principal)
    return principal


CACHE_SECONDS = 5.0
_valid_tokens: dict[tuple[str, str], tuple[float, Principal]] = {}
