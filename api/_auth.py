"""Who is calling: an admin key, a tenant key (acts only as its tenant) or the cron secret.

API keys come as ``x-api-key: KEY`` or ``Authorization: Bearer KEY``; CRON_SECRET only as Bearer,
and only routes that pass ``allow_cron=True`` accept it. Every configured secret is compared, in
constant time, with every credential presented, so timing says nothing about which one matched.
Keys never reach a log line or an error message.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from flask import request

from lib.config import Settings

from ._http import ApiError
from ._state import app_state, current_settings

Role = Literal["admin", "tenant", "cron"]
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    # The acting tenant of a tenant key: pass it as ``tenant=`` to lib. None for admin and cron.
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class _Keyring:
    admin: tuple[bytes, ...]
    tenant: tuple[tuple[str, bytes], ...]
    cron: bytes | None

    @property
    def configured(self) -> bool:
        return bool(self.admin or self.tenant)


@lru_cache(maxsize=8)
def _keyring(settings: Settings) -> _Keyring:
    return _Keyring(
        admin=tuple(key.encode() for key in settings.admin_keys),
        tenant=tuple((tenant, key.encode()) for tenant, key in settings.tenant_keys),
        cron=settings.cron_secret.strip().encode() or None,
    )


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _api_key() -> str | None:
    return request.headers.get("x-api-key", "").strip() or None


def _raw(value: str) -> bytes:
    """The header's bytes: WSGI hands them over decoded as latin-1 (PEP 3333)."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _match(keys: _Keyring, credential: str, *, cron_header: bool) -> Caller | None:
    """Compare ``credential`` with every key (no early exit); the most privileged match wins.
    ``cron_header``: this header may carry the cron secret (Bearer only)."""
    given = _raw(credential)
    admin = False
    for key in keys.admin:
        admin |= hmac.compare_digest(given, key)
    tenant: str | None = None
    for name, key in keys.tenant:
        if hmac.compare_digest(given, key) and tenant is None:
            tenant = name
    cron = keys.cron is not None and hmac.compare_digest(given, keys.cron) and cron_header
    if admin:
        return Caller("admin")
    if tenant is not None:
        return Caller("tenant", tenant)
    return Caller("cron") if cron else None


def authenticate() -> Caller:
    """The caller, or ApiError 503 not_configured (no admin and no tenant key) / 401 unauthorized."""
    problem = app_state().problem
    if problem is not None:
        raise ApiError(503, "not_configured", problem)
    keys = _keyring(current_settings())
    if not keys.configured:
        raise ApiError(
            503, "not_configured", "no API key is configured: set JOBS_API_KEYS or JOBS_TENANT_KEYS"
        )
    api_key, bearer = _api_key(), _bearer()
    if api_key is None and bearer is None:
        raise ApiError(401, "unauthorized", "an API key is required (x-api-key or Bearer)", None, _CHALLENGE)
    found = [
        caller
        for credential, cron_header in ((api_key, False), (bearer, True))
        if credential is not None
        for caller in [_match(keys, credential, cron_header=cron_header)]
        if caller is not None
    ]
    if not found:
        raise ApiError(401, "unauthorized", "the API key is not valid", None, _CHALLENGE)
    order: dict[Role, int] = {"admin": 0, "tenant": 1, "cron": 2}
    return min(found, key=lambda caller: order[caller.role])


def require_key(*, allow_cron: bool = False) -> Caller:
    """An admin or a tenant key (and the cron secret when ``allow_cron``), else 401/403/503."""
    caller = authenticate()
    if caller.role == "cron" and not allow_cron:
        raise ApiError(403, "forbidden", "CRON_SECRET is only accepted by /api/jobs/process")
    return caller


def require_admin(*, allow_cron: bool = False) -> Caller:
    """An admin key (or the cron secret when ``allow_cron``); a tenant key gets 403."""
    caller = require_key(allow_cron=allow_cron)
    if caller.role == "tenant":
        raise ApiError(403, "forbidden", "this endpoint needs an admin key, not a tenant key")
    return caller
