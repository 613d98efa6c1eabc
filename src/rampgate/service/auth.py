"""Caller identity: bearer tokens, console session cookies and the FastAPI dependencies that check them.

Three tokens come from the settings: ``RAMPGATE_SERVICE_TOKEN`` (decisions),
``RAMPGATE_ADMIN_TOKEN`` (read and change) and
``RAMPGATE_ADMIN_READONLY_TOKEN`` (read only). Each travels as
``Authorization: Bearer <token>``. The operator console sends a session
cookie instead, ``rampgate_session``, signed with a key derived from the
admin tokens. Every worker process therefore accepts a cookie that any of
them issued, and rotating an admin token ends every session. A change made with
the cookie must carry the matching ``X-CSRF-Token`` header.

Endpoints whose tokens are all unset are open, for local development;
``rampgate serve`` refuses to listen on a non-loopback address in that case.
An open admin API still rejects changes sent by a web page of another
origin, because a browser on the operator's machine can reach loopback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.exceptions import HTTPException

from rampgate.errors import ConfigurationError, InvalidInput
from rampgate.settings import Settings, load_settings

logger = logging.getLogger(__name__)

Role = Literal["admin", "readonly", "service"]
Via = Literal["api", "console"]

SESSION_COOKIE = "rampgate_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 8 * 3600
SESSION_ROLES: tuple[str, ...] = ("admin", "readonly")

_KEY_LABEL = b"rampgate console session key v1"
_CSRF_LABEL = b"csrf:"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller.

    ``role`` decides what it may do, and ``name`` goes into the config-change
    history as ``changed_by``. ``via`` is ``api`` for a call made with a
    bearer token and ``console`` for one made with the console's session cookie.
    """

    role: Role
    name: str
    via: Via

    @property
    def may_change(self) -> bool:
        return self.role == "admin"


class Unauthorized(HTTPException):
    """401: no credentials, or credentials that match no configured token or session."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(HTTPException):
    """403: valid credentials whose role may not do this, or a cookie change without its CSRF token."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


# -- settings and tokens ------------------------------------------------------


def settings_of(request: Request) -> Settings:
    """Return the settings of the application serving ``request`` (``app.state.settings``), else the environment's."""
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        settings = load_settings()
        request.app.state.settings = settings
    return settings


def _matches(given: str, expected: str | None) -> bool:
    if not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def role_for_token(token: str, settings: Settings) -> Role | None:
    """Return the role that ``token`` grants, None when it matches no configured token.

    Every configured token is compared, each in constant time, so the
    answer's timing does not tell which one came close.
    """
    is_admin = _matches(token, settings.admin_token)
    is_readonly = _matches(token, settings.admin_readonly_token)
    is_service = _matches(token, settings.service_token)
    if is_admin:
        return "admin"
    if is_readonly:
        return "readonly"
    if is_service:
        return "service"
    return None


def is_service_open(settings: Settings) -> bool:
    """True when no service or admin token is set, so ``/v1/check`` takes every caller."""
    return not settings.service_token and not settings.admin_token


def is_admin_open(settings: Settings) -> bool:
    """True when neither admin token is set, so the admin API takes every caller as ``admin``."""
    return not settings.admin_token and not settings.admin_readonly_token


def bearer_token(request: Request) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, or None when the header is missing.

    Raise :class:`Unauthorized` when the header is there but is not a bearer token.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    token = parse_bearer(header)
    if token is None:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token


def parse_bearer(header: str) -> str | None:
    """Return the token of an ``Authorization`` value ``Bearer <token>``, None when it has another form."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


# -- console sessions ---------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _session_key(settings: Settings) -> bytes:
    """Derive the HMAC key of session cookies from the admin tokens.

    Every worker derives the same key from the same settings; changing either
    admin token changes the key and so signs every open session out.
    """
    if not settings.admin_token and not settings.admin_readonly_token:
        raise ConfigurationError(
            "RAMPGATE_ADMIN_TOKEN", None, "a token, because console sessions are signed with a key derived from it"
        )
    material = b"\0".join(
        [_KEY_LABEL, (settings.admin_token or "").encode(), (settings.admin_readonly_token or "").encode()]
    )
    return hashlib.sha256(material).digest()


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def create_session_cookie(
    role: str,
    settings: Settings | None = None,
    *,
    now: float | None = None,
    seconds: int = SESSION_SECONDS,
) -> tuple[str, str]:
    """Return ``(cookie_value, csrf_token)`` for a console session of ``role``.

    ``role`` is ``admin`` or ``readonly``. The cookie contains the role and its
    expiry (Unix seconds) in clear text, and an HMAC-SHA256 signature over
    them. Set it as ``rampgate_session`` with ``HttpOnly``, ``SameSite=Strict``
    and ``Max-Age=seconds``. The CSRF token is derived from the cookie value
    (see :func:`csrf_token_for`), so no server-side state is kept. Pass the
    application's settings (``settings_of(request)``); without them the
    environment's settings are read.
    """
    if role not in SESSION_ROLES:
        raise InvalidInput("role", role, "admin or readonly")
    settings = settings or load_settings()
    key = _session_key(settings)

    expires = int((time.time() if now is None else now) + seconds)
    nonce = secrets.token_urlsafe(12)
    payload = f"{role}.{expires}.{nonce}"
    cookie = f"{payload}.{_sign(key, payload)}"
    return cookie, _csrf_token(key, cookie)


def _csrf_token(key: bytes, cookie: str) -> str:
    return _sign(key, _CSRF_LABEL.decode() + cookie)


def csrf_token_for(cookie: str, settings: Settings | None = None) -> str:
    """Return the ``X-CSRF-Token`` value that goes with a session cookie value."""
    return _csrf_token(_session_key(settings or load_settings()), cookie)


def read_session_cookie(cookie: str, settings: Settings, *, now: float | None = None) -> Role | None:
    """Return the role of a valid, unexpired session cookie; None for anything else."""
    parts = cookie.split(".")
    if len(parts) != 4:
        return None
    role, expires, nonce, signature = parts
    if role not in SESSION_ROLES or not expires.isdigit():
        return None
    try:
        key = _session_key(settings)
    except ConfigurationError:
        return None
    if not hmac.compare_digest(signature, _sign(key, f"{role}.{expires}.{nonce}")):
        return None
    if int(expires) <= (time.time() if now is None else now):
        return None
    return role  # type: ignore[return-value]


# -- dependencies -------------------------------------------------------------


def _principal(request: Request, *, change: bool) -> Principal | None:
    """Identify the caller from the bearer token or, failing that, the session cookie.

    Return None when the request carries neither. A change made with the
    cookie must carry its CSRF token.
    """
    settings = settings_of(request)
    token = bearer_token(request)
    if token is not None:
        role = role_for_token(token, settings)
        if role is None:
            raise Unauthorized("the bearer token matches no configured token")
        return Principal(role, role, "api")

    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        return None
    role = read_session_cookie(cookie, settings)
    if role is None:
        raise Unauthorized("the console session is invalid or has expired; sign in again")
    if change:
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), csrf_token_for(cookie, settings).encode()):
            raise Forbidden(f"a change made with the console session needs its {CSRF_HEADER} header")
    return Principal(role, role, "console")


async def require_service(request: Request) -> Principal:
    """Allow the service token (the admin token too); open when neither is configured.

    A coroutine although it never awaits: FastAPI runs a plain function
    dependency in a worker thread, and on /v1/check that hand-off cost about
    a third of the requests per second (BENCHMARKS.md, comparison 4).
    """
    settings = settings_of(request)
    token = bearer_token(request)
    if token is None:
        if is_service_open(settings):
            _require_loopback_host(request, "RAMPGATE_SERVICE_TOKEN")
            return Principal("service", "anonymous", "api")
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <RAMPGATE_SERVICE_TOKEN>'")

    role = role_for_token(token, settings)
    if role is None:
        raise Unauthorized("the bearer token matches no configured token")
    if role not in ("service", "admin"):
        raise Forbidden(f"a {role} token may not ask for decisions; use the service token")
    return Principal(role, role, "api")


def require_admin_read(request: Request) -> Principal:
    """Allow the admin and read-only tokens or a console session; open when neither admin token is set."""
    principal = _principal(request, change=False)
    if principal is None:
        if is_admin_open(settings_of(request)):
            _require_loopback_host(request, "RAMPGATE_ADMIN_TOKEN")
            return Principal("admin", "anonymous", "api")
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <RAMPGATE_ADMIN_TOKEN>'")
    if principal.role == "service":
        raise Forbidden("the service token may only ask for decisions; use an admin token")
    return principal


def is_loopback_host(host: str | None) -> bool:
    """True when a ``Host`` header value names this machine: ``localhost`` or a loopback address, any port."""
    if not host:
        return False
    if host.startswith("[") and "]" in host:
        name = host[1 : host.index("]")]  # [IPv6] or [IPv6]:port
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]  # name:port or IPv4:port
    else:
        name = host  # a name, an IPv4 address or a bare IPv6 address
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _require_loopback_host(request: Request, token_variable: str) -> None:
    """Reject an open surface's request that was addressed to any name other than this machine.

    Without a token the service accepts every caller, which ``rampgate
    serve`` allows on loopback only. A web page can still reach it by DNS
    rebinding: its own name resolves to 127.0.0.1, so the browser sends the
    page's name as ``Host`` and treats the response as same-origin.
    """
    if not is_loopback_host(request.headers.get("host")):
        raise Forbidden(
            f"with no {token_variable} set, only requests addressed to localhost or a loopback address are "
            f"served; set {token_variable} to serve other names"
        )


def is_cross_origin(request: Request) -> bool:
    """True when a browser sent the request from a page of another origin (its ``Origin`` names another host)."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != request.headers.get("host", "")


def require_admin_write(request: Request) -> Principal:
    """Allow the admin token or an admin console session with its CSRF token; 403 for read-only callers."""
    principal = _principal(request, change=True)
    if principal is None:
        if is_admin_open(settings_of(request)):
            _require_loopback_host(request, "RAMPGATE_ADMIN_TOKEN")
            if is_cross_origin(request):
                raise Forbidden("changes from a page of another origin are rejected; set RAMPGATE_ADMIN_TOKEN")
            return Principal("admin", "anonymous", "api")
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <RAMPGATE_ADMIN_TOKEN>'")
    if principal.role == "service":
        raise Forbidden("the service token may only ask for decisions; use the admin token")
    if principal.role != "admin":
        raise Forbidden(f"a {principal.role} token may only read; changes need the admin token")
    return principal
