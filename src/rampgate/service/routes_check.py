"""``POST /v1/check``: decisions for callers in any language, over HTTP."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rampgate.service.auth import require_service
from rampgate.service.responses import ratelimit_headers
from rampgate.service.schemas import ERROR_RESPONSES, CheckRequest, DecisionBody
from rampgate.service.state import decide, language_of

router = APIRouter(tags=["decisions"], responses=ERROR_RESPONSES)


@router.post("/v1/check", response_model=DecisionBody, dependencies=[Depends(require_service)])
async def check(body: CheckRequest, request: Request) -> JSONResponse:
    """Decide one request and return the decision fields, blocked or not, with the RateLimit headers.

    The status is 200 even when the request is blocked: ``allowed`` is what
    the caller must do, and ``message`` is the end-user sentence in the
    request's ``Accept-Language`` (English or Russian).
    """
    decision = await decide(
        request, body.actor_type, body.actor_id, body.action, body.cost,
        request_id=body.request_id, context=body.context,
    )
    return JSONResponse(decision.to_dict(language_of(request)), headers=ratelimit_headers(decision))
