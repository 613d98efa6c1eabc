"""Two example endpoints protected by the gate, as an application would protect its own.

The actor is ``user:<sub>`` of the verified end-user JWT, never a field the
client chooses. A blocked request gets 429 with ``Retry-After`` (absent when
the request can never pass), the RateLimit headers and the body of
:func:`rampgate.service.responses.blocked_body`, its message in the
request's ``Accept-Language``.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rampgate.core.decision import Decision
from rampgate.service.jwt_auth import EndUser, require_end_user
from rampgate.service.responses import allowed_headers, blocked_body, blocked_headers
from rampgate.service.schemas import (
    ERROR_RESPONSES,
    BlockedBody,
    DirectMessage,
    DirectMessageSent,
    UploadAuthorized,
    UploadRequest,
)
from rampgate.service.state import decide, language_of

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
UPLOAD_AUTHORIZATION_SECONDS = 300

_RATELIMIT_HEADERS = {
    "RateLimit-Policy": {"description": 'the policy applied, for example "B.media_upload";q=5;w=60', "schema": {"type": "string"}},
    "RateLimit": {"description": 'units left and seconds until one more, for example "B.media_upload";r=0;t=12', "schema": {"type": "string"}},
    REQUEST_ID_HEADER: {"description": "the id under which the decision is audited", "schema": {"type": "string"}},
}
BLOCKED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {
        "model": BlockedBody,
        "description": "rate limited; Retry-After is absent when the request can never pass",
        "headers": {
            "Retry-After": {"description": "whole seconds, at least 1", "schema": {"type": "string"}},
            **_RATELIMIT_HEADERS,
        },
    },
}

router = APIRouter(tags=["protected examples"], responses={**ERROR_RESPONSES, **BLOCKED_RESPONSE})


def request_id_of(request: Request) -> str:
    """Return the caller's ``X-Request-ID`` when it is usable, else a new random id."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and len(given) <= MAX_REQUEST_ID_LENGTH and given.isprintable():
        return given
    return uuid.uuid4().hex


async def _guard(request: Request, user: EndUser, action: str) -> tuple[Decision, str, JSONResponse | None]:
    """Decide the user's request; return the decision, its request id and the 429 to send when blocked."""
    request_id = request_id_of(request)
    decision = await decide(
        request, user.actor_type, user.actor_id, action,
        request_id=request_id, context={"endpoint": request.url.path},
    )
    if decision.allowed:
        return decision, request_id, None

    headers = blocked_headers(decision)
    headers[REQUEST_ID_HEADER] = request_id
    blocked = JSONResponse(blocked_body(decision, language_of(request)), status_code=429, headers=headers)
    return decision, request_id, blocked


def _allowed(content: dict[str, Any], decision: Decision, request_id: str) -> JSONResponse:
    headers = allowed_headers(decision)
    headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(content, headers=headers)


@router.post("/v1/dm/send", response_model=DirectMessageSent)
async def send_direct_message(
    body: DirectMessage, request: Request, user: EndUser = Depends(require_end_user)
) -> JSONResponse:
    """Send a direct message (action ``send_message``); nothing is delivered, this only shows the gate at work."""
    decision, request_id, blocked = await _guard(request, user, "send_message")
    if blocked is not None:
        return blocked

    sent = {"sent": True, "message_id": uuid.uuid4().hex, "target_user_id": body.target_user_id}
    return _allowed(sent, decision, request_id)


@router.post("/v1/media/upload-authorize", response_model=UploadAuthorized)
async def authorize_upload(
    request: Request, body: UploadRequest | None = None, user: EndUser = Depends(require_end_user)
) -> JSONResponse:
    """Authorise one media upload (action ``media_upload``); the body may be an empty object or absent."""
    decision, request_id, blocked = await _guard(request, user, "media_upload")
    if blocked is not None:
        return blocked

    authorized = {
        "authorized": True,
        "upload_id": uuid.uuid4().hex,
        "content_type": body.content_type if body is not None else None,
        "expires_in": UPLOAD_AUTHORIZATION_SECONDS,
    }
    return _allowed(authorized, decision, request_id)
