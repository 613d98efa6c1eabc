"""Translation of exceptions into HTTP answers, in one place.

Every error body is JSON with an ``error`` code and a ``message``; input
errors add the ``field`` and the ``value`` given::

    InvalidInput, request validation   422 invalid_input (400 for malformed JSON)
    NotFound                           404 not_found
    Conflict                           409 conflict
    StoreError, database unreachable   503 store_unavailable
    database integrity error           409 conflict
    HTTPException (401, 403, 405 ...)  its status, error named after it
    anything else                      500 internal_error, logged with the traceback
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rampgate.errors import Conflict, InvalidInput, NotFound, StoreError

logger = logging.getLogger(__name__)

MAX_ECHOED_CHARACTERS = 80

# Error codes of the HTTP statuses that FastAPI and the auth dependencies raise.
_HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

# The detail of the 400 that FastAPI raises when a body cannot be decoded (fastapi/routing.py, 0.165).
_UNPARSABLE_BODY_DETAIL = "There was an error parsing the body"

# Request locations that FastAPI puts first in a validation error's ``loc``.
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class LogThrottle:
    """Lets one line per key through every ``seconds``, and counts the ones it held back.

    A client that keeps sending bad tokens or bad input must not flood the log.
    """

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._last: dict[tuple[Any, ...], float] = {}
        self._held_back: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()

    def admit(self, key: tuple[Any, ...]) -> int | None:
        """Return how many lines of ``key`` were held back since the last one, or None to hold this one back."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, float("-inf")) < self.seconds:
                self._held_back[key] = self._held_back.get(key, 0) + 1
                return None
            if len(self._last) > 10_000:
                self._last.clear()
                self._held_back.clear()
            self._last[key] = now
            return self._held_back.pop(key, 0)


_throttle = LogThrottle()


def log_rejection(event: str, path: str, **fields: Any) -> None:
    """Log a rejected request at INFO, at most once per event, path and fields every 10 seconds."""
    held_back = _throttle.admit((event, path, *fields.values()))
    if held_back is not None:
        logger.info(event, extra={"path": path, **fields, "similar_lines_held_back": held_back})


def echoed_value(value: Any) -> Any:
    """Return ``value`` as it can be repeated in an error body: JSON scalars as they are, the rest shortened.

    JSON has no NaN or infinity, so a non-finite float becomes the string
    ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        # A body FastAPI did not parse as JSON (another content type) arrives as bytes.
        text = value.decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > MAX_ECHOED_CHARACTERS:
        text = text[: MAX_ECHOED_CHARACTERS - 3] + "..."
    # A JSON body may carry lone surrogates ("\\ud800"), which UTF-8 cannot encode.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(error: str, message: str, field: str | None = None, value: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "message": message}
    if field is not None:
        body["field"] = field
        body["value"] = echoed_value(value)
    return body


def _field_name(location: tuple[Any, ...]) -> str:
    """Turn a validation ``loc`` such as ``("body", "limit")`` into ``limit``."""
    parts = [str(part) for part in location]
    if parts and parts[0] in _LOCATIONS and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _invalid_input(request: Request, error: InvalidInput) -> JSONResponse:
    log_rejection("http.invalid_input", request.url.path, field=error.field)
    body = error_body("invalid_input", str(error), error.field, error.value)
    return JSONResponse(body, status_code=422)


def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    location = tuple(first.get("loc", ()))

    if first.get("type") == "json_invalid":
        message = f"malformed JSON in the request body: {first.get('msg', 'invalid JSON')}"
        log_rejection("http.malformed_json", request.url.path)
        return JSONResponse(error_body("invalid_input", message, "body", None), status_code=400)

    field = _field_name(location)
    value = first.get("input")
    if first.get("type") == "missing":
        message = f"missing {field}"
        value = None
    else:
        reason = str(first.get("msg", "invalid value"))
        if isinstance(value, bytes):
            reason = "expected a JSON object sent with Content-Type: application/json"
        shown = repr(echoed_value(value))
        message = f"invalid {field}: {shown}; {reason[:1].lower()}{reason[1:]}"
    log_rejection("http.invalid_input", request.url.path, field=field)
    return JSONResponse(error_body("invalid_input", message, field, value), status_code=422)


def _not_found(request: Request, error: NotFound) -> JSONResponse:
    return JSONResponse(error_body("not_found", str(error)), status_code=404)


def _conflict(request: Request, error: Conflict) -> JSONResponse:
    logger.info("http.conflict", extra={"path": request.url.path, "error": str(error)})
    return JSONResponse(error_body("conflict", str(error)), status_code=409)


def _store_error(request: Request, error: StoreError) -> JSONResponse:
    logger.warning(
        "http.store_unavailable",
        extra={"path": request.url.path, "error": str(error), "hint": "check that the catalog database is reachable"},
    )
    body = error_body("store_unavailable", "a store is unreachable; try again shortly")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


def _database_error(request: Request, error: sa.exc.DBAPIError) -> JSONResponse:
    if isinstance(error, sa.exc.IntegrityError):
        logger.info("http.conflict", extra={"path": request.url.path, "error": str(error.orig)})
        body = error_body("conflict", "the change conflicts with a row written at the same time; try again")
        return JSONResponse(body, status_code=409)

    logger.warning(
        "http.store_unavailable",
        extra={"path": request.url.path, "error": str(error.orig), "hint": "check that the catalog database is reachable"},
    )
    body = error_body("store_unavailable", "the catalog database is unreachable; try again shortly")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


def _unparsable_body_reason(cause: BaseException | None) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not valid UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "the body is nested too deeply"
    return "the body could not be parsed"


def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    # FastAPI answers 400 with this detail, raised from the original exception, when the body
    # cannot be decoded at all: invalid UTF-8 or nesting deeper than the recursion limit.
    if error.status_code == 400 and error.detail == _UNPARSABLE_BODY_DETAIL:
        message = f"malformed JSON in the request body: {_unparsable_body_reason(error.__cause__)}"
        log_rejection("http.malformed_json", request.url.path)
        return JSONResponse(error_body("invalid_input", message, "body", None), status_code=400)

    code = _HTTP_ERROR_CODES.get(error.status_code, "http_error")
    message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
    if error.status_code in (401, 403):
        log_rejection("http.denied", request.url.path, status=error.status_code, reason=message)
    return JSONResponse(error_body(code, message), status_code=error.status_code, headers=error.headers)


def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.error("http.internal_error", exc_info=error, extra={"path": request.url.path, "method": request.method})
    return JSONResponse(error_body("internal_error", "internal error; the server log has the details"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping of the module docstring on ``app``."""
    app.add_exception_handler(InvalidInput, _invalid_input)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(Conflict, _conflict)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, _store_error)  # type: ignore[arg-type]
    app.add_exception_handler(sa.exc.IntegrityError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(sa.exc.OperationalError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(sa.exc.InterfaceError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
