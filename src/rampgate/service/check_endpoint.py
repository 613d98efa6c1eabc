"""``POST /v1/check`` served in front of FastAPI, for the requests that need none of its machinery.

The decision endpoint is the service's hot path. Through FastAPI a check
costs route matching across every router, dependency solving, pydantic
validation and response encoding, several times the decision itself.
:class:`CheckEndpoint` is a pure ASGI middleware that serves the common
request on its own: an authorised caller, a JSON body that is valid
without conversion, a decision without error. Every other request (a missing or wrong token, a
field out of range, an unknown field, a body over 16 KiB, a body that is not
JSON) goes on to the FastAPI route in :mod:`rampgate.service.routes_check`
with the body already read, and that route gives the documented 401, 403 or
422. Both paths answer a valid request byte for byte alike, which a
differential test checks; the FastAPI route also keeps the operation in the
OpenAPI document.
"""

from __future__ import annotations

import json
import logging
import re
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rampgate.core.messages import negotiate_language
from rampgate.core.names import ACTOR_TYPES, MAX_ACTOR_ID_LENGTH
from rampgate.errors import InvalidInput
from rampgate.service.auth import is_loopback_host, is_service_open, parse_bearer, role_for_token
from rampgate.service.request_log import log_request
from rampgate.service.responses import ratelimit_headers
from rampgate.service.schemas import context_problem

logger = logging.getLogger(__name__)

CHECK_PATH = "/v1/check"
# A check with the largest context (4,096 bytes as JSON) and every other
# field at its longest stays well under this limit. A larger body takes the route.
MAX_FAST_BODY_BYTES = 16 * 1024

_ACTOR_TYPES = frozenset(ACTOR_TYPES)
_FIELDS = frozenset({"actor_type", "actor_id", "action", "cost", "request_id", "context"})
_ACTION_NAME = re.compile(r"[a-z0-9_:.\-]{1,64}")
# JSONResponse's encoding, so that both paths send the same bytes.
_encode_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode
_JSON_CONTENT_TYPE = b"application/json"
# Accept-Language values seen, and their language; bounded because clients choose them.
_LANGUAGE_CACHE_SIZE = 256


class CheckEndpoint:
    """Serve valid, authorised ``POST /v1/check`` requests and pass everything else to ``app``.

    It reads the gate, the settings and the metrics from ``app.state`` on
    each request, as the routes do, so it must sit inside the Starlette or
    FastAPI application (``app.add_middleware``), which sets ``scope["app"]``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Authorization header values that were accepted, so a repeated
        # caller skips the constant-time comparison of every token.
        self._accepted: dict[bytes, bool] = {}
        self._languages: dict[bytes, str] = {}
        # Requests served here rather than by the route.
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHECK_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return

        # Read the headers this path needs; anything unusual goes to the route unread.
        started = perf_counter()
        authorization = content_type = accept_language = host = None
        length = -1
        repeated = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                repeated = repeated or authorization is not None
                authorization = value
            elif name == b"content-type":
                repeated = repeated or content_type is not None
                content_type = value
            elif name == b"accept-language":
                accept_language = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"host":
                host = value
        state = scope["app"].state
        if (
            repeated
            or not 0 < length <= MAX_FAST_BODY_BYTES
            or not _is_json(content_type)
            or not self._is_authorised(authorization, host, state.settings)
        ):
            await self.app(scope, receive, send)
            return

        # Read and validate the body.
        body, complete = await _read_body(receive)
        if not complete:
            return  # the client disconnected
        fields = _check_fields(body)
        gate = state.gate
        if fields is None or gate is None:
            await self.app(scope, _replay(body, receive), send)
            return

        # Decide, then respond as the route's JSONResponse does: RateLimit fields, then length and type.
        metrics = state.metrics
        actor_type, actor_id, action, cost, request_id, context = fields
        status = 500
        try:
            decided = perf_counter()
            try:
                decision = await gate.decide(
                    actor_type, actor_id, action, cost, request_id=request_id, context=context
                )
            except InvalidInput:
                # The checks above follow the route's model; the route words the 422.
                status = 0
                await self.app(scope, _replay(body, receive), send)
                return
            metrics.observe_decision(decision, perf_counter() - decided, gate.settings.counter_store)

            content = _encode_json(decision.to_dict(self._language(accept_language))).encode()
            headers = [(name.lower().encode(), value.encode()) for name, value in ratelimit_headers(decision).items()]
            headers.append((b"content-length", str(len(content)).encode()))
            headers.append((b"content-type", _JSON_CONTENT_TYPE))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            status = 200
            await send({"type": "http.response.body", "body": content})
            self.answered += 1
        finally:
            # The route counts and logs the requests that it serves.
            if status:
                metrics.observe_response(CHECK_PATH, status)
                log_request(scope, status, started)

    def _is_authorised(self, authorization: bytes | None, host: bytes | None, settings: Any) -> bool:
        """True when the route's ``require_service`` would let this caller ask for a decision."""
        if authorization is None:
            return is_service_open(settings) and host is not None and is_loopback_host(host.decode("latin-1"))
        if authorization in self._accepted:
            return True

        token = parse_bearer(authorization.decode("latin-1"))
        if token is None or role_for_token(token, settings) not in ("service", "admin"):
            return False
        if len(self._accepted) < 64:
            self._accepted[authorization] = True
        return True

    def _language(self, accept_language: bytes | None) -> str:
        if accept_language is None:
            return "en"
        language = self._languages.get(accept_language)
        if language is None:
            language = negotiate_language(accept_language.decode("latin-1"))
            if len(self._languages) >= _LANGUAGE_CACHE_SIZE:
                self._languages.clear()
            self._languages[accept_language] = language
        return language


def _is_json(content_type: bytes | None) -> bool:
    """True for ``application/json``, with or without parameters, in any case."""
    if content_type is None:
        return False
    if content_type == _JSON_CONTENT_TYPE:
        return True
    return content_type.split(b";", 1)[0].strip().lower() == _JSON_CONTENT_TYPE


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """Read the request body; the flag is False when the client disconnected first."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body, False
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body, True


def _replay(body: bytes, receive: Receive) -> Receive:
    """Return a ``receive`` that gives ``body`` back as the whole request, then waits on the client's."""
    replayed = False

    async def receive_again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


def _check_fields(
    body: bytes,
) -> tuple[str, str, str, int, str | None, dict[str, Any] | None] | None:
    """Return the request's fields when the route's ``CheckRequest`` would accept them unchanged, else None.

    The checks follow the model: strict types, the same lengths and
    patterns, no unknown field. A string that could not be encoded as
    UTF-8 (a lone surrogate from a ``\\ud800`` escape) is left to the route.
    """
    try:
        fields = json.loads(body)
    except ValueError:
        return None
    if fields.__class__ is not dict or not fields.keys() <= _FIELDS:
        return None

    actor_type = fields.get("actor_type")
    actor_id = fields.get("actor_id")
    action = fields.get("action")
    cost = fields.get("cost", 1)
    request_id = fields.get("request_id")
    context = fields.get("context")
    if (
        actor_type.__class__ is not str
        or actor_type not in _ACTOR_TYPES
        or actor_id.__class__ is not str
        or not 0 < len(actor_id) <= MAX_ACTOR_ID_LENGTH
        or "\x00" in actor_id
        or not (actor_id.isascii() or _is_encodable(actor_id))
        or action.__class__ is not str
        or _ACTION_NAME.fullmatch(action) is None
        or cost.__class__ is not int
        or not 0 < cost <= 1_000_000
    ):
        return None
    if request_id is not None and (
        request_id.__class__ is not str
        or len(request_id) > 128
        or "\x00" in request_id
        or not (request_id.isascii() or _is_encodable(request_id))
    ):
        return None
    if context is not None and (context.__class__ is not dict or context_problem(context) is not None):
        return None
    return actor_type, actor_id, action, cost, request_id, context


def _is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
