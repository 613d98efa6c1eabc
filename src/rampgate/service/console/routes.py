"""Routes of the console: the page, sign-in, sign-out and the static assets."""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import time
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from rampgate.service import auth

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
# Failed sign-ins allowed per client address and window before the form
# returns 429. That is enough for typing mistakes and far too few to guess a token.
SIGN_IN_FAILURES_ALLOWED = 10
SIGN_IN_WINDOW_SECONDS = 60.0

# Everything the page loads comes from rampgate itself. The policy makes the
# browser block any other origin, inline script and inline style markup.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self'; "
    "connect-src 'self'; "
    "form-action 'self'; "
    "frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

ConsoleRole = Literal["admin", "readonly"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(TEMPLATE_DIR))


@lru_cache(maxsize=1)
def static_version() -> str:
    """Return a short hash of every static file, appended to asset URLs so upgrades bypass caches."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def static_url(name: str) -> str:
    return f"/console/static/{name}?v={static_version()}"


templates.env.globals["static_url"] = static_url


class SignInThrottle:
    """Counts failed sign-ins per client address over a sliding window."""

    def __init__(self, allowed: int, window_seconds: float) -> None:
        self.allowed = allowed
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> float:
        """Return the seconds until ``client`` may try again, 0 when it may try now."""
        now = time.monotonic()
        failures = self._recent(client, now)
        if len(failures) < self.allowed:
            return 0.0
        return failures[0] + self.window_seconds - now

    def record_failure(self, client: str) -> None:
        now = time.monotonic()
        self._recent(client, now).append(now)
        # Forget addresses whose failures have all expired, so the table stays small.
        if len(self._failures) > 10_000:
            for address in [key for key, value in self._failures.items() if not self._recent(key, now)]:
                del self._failures[address]


throttle = SignInThrottle(SIGN_IN_FAILURES_ALLOWED, SIGN_IN_WINDOW_SECONDS)


def session_role(request: Request) -> ConsoleRole | None:
    """Return the role of the request's valid session cookie, or None without one."""
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    if not cookie:
        return None
    role = auth.read_session_cookie(cookie, auth.settings_of(request))
    return role if role in auth.SESSION_ROLES else None  # type: ignore[return-value]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def render_sign_in(request: Request, *, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    settings = auth.settings_of(request)
    configured = bool(settings.admin_token or settings.admin_readonly_token)
    context = {"error": error, "configured": configured}
    response = templates.TemplateResponse(request, "sign_in.html", context, status_code=status_code)
    response.headers.update(PAGE_HEADERS)
    return response


@router.get("/console", response_class=HTMLResponse)
def console_page(request: Request) -> Response:
    """Show the console to a signed-in operator, or the sign-in form."""
    role = session_role(request)
    if role is None:
        return render_sign_in(request)

    cookie = request.cookies[auth.SESSION_COOKIE]
    context = {"role": role, "csrf_token": auth.csrf_token_for(cookie, auth.settings_of(request))}
    response = templates.TemplateResponse(request, "console.html", context)
    response.headers.update(PAGE_HEADERS)
    return response


@router.post("/console/session")
def sign_in(request: Request, token: str = Form("")) -> Response:
    """Check the submitted token, set the session cookie and go back to the console."""
    client = client_address(request)
    wait = throttle.retry_after(client)
    if wait > 0:
        logger.warning("console.sign_in_throttled", extra={"client": client})
        message = f"Too many failed sign-ins from this address. Try again in {int(wait) + 1} s."
        throttled = render_sign_in(request, error=message, status_code=429)
        throttled.headers["Retry-After"] = str(int(wait) + 1)
        return throttled

    settings = auth.settings_of(request)
    role = auth.role_for_token(token, settings) if token else None
    # The service token is valid for /v1/check only. The console takes the two admin tokens.
    if role is None or role not in auth.SESSION_ROLES:
        throttle.record_failure(client)
        logger.info("console.sign_in_failed", extra={"client": client})
        return render_sign_in(request, error="Invalid token. Paste the admin or read-only token.", status_code=401)

    cookie_value, _csrf = auth.create_session_cookie(role, settings)
    logger.info("console.signed_in", extra={"client": client, "role": role})
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        cookie_value,
        max_age=auth.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/console/signout")
def sign_out(request: Request, csrf_token: str = Form("")) -> Response:
    """Clear the session cookie. The form carries the CSRF token, so other pages cannot sign an operator out."""
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    if cookie and session_role(request) is not None:
        expected = auth.csrf_token_for(cookie, auth.settings_of(request))
        if not hmac.compare_digest(csrf_token.encode(), expected.encode()):
            logger.info("console.sign_out_rejected", extra={"client": client_address(request), "reason": "invalid csrf_token"})
            return Response("invalid csrf_token: the sign-out form is stale; reload the console", status_code=403)

    response = RedirectResponse("/console", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    logger.info("console.signed_out", extra={"client": client_address(request)})
    return response


@router.get("/console/static/{name:path}")
def static_asset(name: str) -> Response:
    """Serve a file from the console's static folder, and nothing outside it."""
    path = (STATIC_DIR / name).resolve()
    if not path.is_relative_to(STATIC_DIR) or not path.is_file():
        return Response(f"not found: /console/static/{name}", status_code=404, media_type="text/plain")

    media_type = STATIC_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=media_type, headers=headers)
