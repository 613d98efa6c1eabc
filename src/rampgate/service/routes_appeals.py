"""Appeals over HTTP: end users file them with their JWT, operators list them and give verdicts.

An end user may appeal an action on which they were blocked in the last
24 hours, with one open appeal per action at a time. Every appeal counts as
a complaint for the rollout gates; an upheld one marks its actor as known
legitimate.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request

from rampgate.service.auth import Principal, require_admin_read, require_admin_write
from rampgate.service.jwt_auth import EndUser, require_end_user
from rampgate.service.schemas import ERROR_RESPONSES, AppealBody, AppealCreate, AppealResolve, ErrorBody
from rampgate.service.state import appeals_of, gate_of

AppealId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Resolution = Annotated[AppealResolve | None, Body()]

NOT_FOUND_OR_CLOSED: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such appeal"},
    409: {"model": ErrorBody, "description": "the appeal already has a verdict"},
}

router = APIRouter(tags=["appeals"], responses=ERROR_RESPONSES)


@router.post(
    "/v1/appeals",
    response_model=AppealBody,
    status_code=201,
    responses={409: {"model": ErrorBody, "description": "an appeal on this action is still open"}},
)
def file_appeal(body: AppealCreate, request: Request, user: EndUser = Depends(require_end_user)) -> dict[str, Any]:
    """File an appeal against a block, as the end user of the bearer JWT."""
    # Rows of blocks made by this worker a moment ago may still be queued.
    gate_of(request).recorder.flush()
    return appeals_of(request).file(
        user.actor_type, user.actor_id, body.action, body.text, body.request_id, require_recent_block=True
    )


@router.get("/v1/appeals", response_model=list[AppealBody])
def list_appeals(
    request: Request,
    principal: Principal = Depends(require_admin_read),
    status: Literal["open", "upheld", "rejected"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Return appeals, newest first, optionally of one status."""
    return appeals_of(request).list(status=status, limit=limit)


@router.post("/v1/appeals/{appeal_id}/uphold", response_model=AppealBody, responses=NOT_FOUND_OR_CLOSED)
def uphold_appeal(
    appeal_id: AppealId, request: Request, body: Resolution = None, principal: Principal = Depends(require_admin_write)
) -> dict[str, Any]:
    """Uphold an open appeal: the block was wrong, and the actor counts as known legitimate."""
    note = body.note if body is not None else None
    return appeals_of(request).uphold(appeal_id, resolved_by=principal.name, note=note, via=principal.via)


@router.post("/v1/appeals/{appeal_id}/reject", response_model=AppealBody, responses=NOT_FOUND_OR_CLOSED)
def reject_appeal(
    appeal_id: AppealId, request: Request, body: Resolution = None, principal: Principal = Depends(require_admin_write)
) -> dict[str, Any]:
    """Reject an open appeal: the block was right."""
    note = body.note if body is not None else None
    return appeals_of(request).reject(appeal_id, resolved_by=principal.name, note=note, via=principal.via)
