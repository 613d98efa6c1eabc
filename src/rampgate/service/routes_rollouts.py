"""Admin API of rollouts: the status document, the rollouts, and the operator's commands on them.

Endpoints are plain ``def`` so that FastAPI runs their catalog calls in the
threadpool. A command saves the rollout and the flag change it calls for,
then reloads the local gate's snapshot. The other workers follow through the
catalog watcher, and a running controller reads the new state on its next
tick.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import default_plan, plan_from_dict
from rampgate.rollout.operations import RolloutOperations
from rampgate.rollout.status import build_status, list_rollouts, rollout_of_flag
from rampgate.rollout.webhook import WebhookSender
from rampgate.service.auth import Principal, require_admin_read, require_admin_write
from rampgate.service.schemas import ERROR_RESPONSES, ErrorBody
from rampgate.service.state import gate_of

logger = logging.getLogger(__name__)

FLAG_NAME_PATTERN = r"^[A-Za-z0-9_:.\-]{1,128}$"

router = APIRouter(tags=["rollouts"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require_admin_read)]
Writer = Annotated[Principal, Depends(require_admin_write)]
FlagName = Annotated[str, Path(pattern=FLAG_NAME_PATTERN, description="flag name, for example rate_limit_enforcement")]


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: dict[str, Any] | None = Field(
        None, description="plan document with the keys of a plan file; the default plan when omitted"
    )


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500, description="why; recorded with the transition")
    force: bool = Field(False, description="advance only: promote whatever bake time and gates say")


def operations_of(request: Request) -> RolloutOperations:
    """Return the application's rollout operations, built on the gate's catalog on first use."""
    operations = getattr(request.app.state, "rollout_operations", None)
    if operations is None:
        settings = request.app.state.settings
        webhook = WebhookSender(settings.webhook_url) if settings.webhook_url else None
        operations = RolloutOperations(gate_of(request).catalog, webhook=webhook)
        request.app.state.rollout_operations = operations
    return operations


def _done(request: Request, flag: str) -> dict[str, Any]:
    gate_of(request).refresh()
    return rollout_of_flag(gate_of(request).catalog, flag)


@router.get("/v1/status", responses={404: {"model": ErrorBody, "description": "no such flag"}})
def get_status(
    request: Request,
    _: Reader,
    flag: Annotated[str, Query(pattern=FLAG_NAME_PATTERN)] = ENFORCEMENT_FLAG,
) -> dict[str, Any]:
    """Return the document that ``rampgate status --json`` prints."""
    return build_status(gate_of(request).catalog, flag)


@router.get("/v1/rollouts")
def get_rollouts(request: Request, _: Reader) -> list[dict[str, Any]]:
    """Return the newest rollout of every flag that had one."""
    return list_rollouts(gate_of(request).catalog)


@router.get("/v1/rollouts/{flag}")
def get_rollout(request: Request, _: Reader, flag: FlagName) -> dict[str, Any]:
    """Return the newest rollout of the flag (state ``none`` when it never had one)."""
    return rollout_of_flag(gate_of(request).catalog, flag)


@router.post("/v1/rollouts/{flag}/start")
def start_rollout(
    request: Request, principal: Writer, flag: FlagName, body: Annotated[StartBody | None, Body()] = None
) -> dict[str, Any]:
    """Start a rollout: the flag is enabled at the first stage's percentage. 409 if one is running."""
    plan = default_plan() if body is None or body.plan is None else plan_from_dict(body.plan)
    operations_of(request).start(flag, plan, changed_by=principal.name, via=principal.via)
    return _done(request, flag)


@router.post("/v1/rollouts/{flag}/advance")
def advance_rollout(
    request: Request, principal: Writer, flag: FlagName, body: Annotated[CommandBody | None, Body()] = None
) -> dict[str, Any]:
    """Approve the next stage, or with ``force`` promote regardless of bake time and gates. 409 when not ready."""
    body = body or CommandBody()
    operations_of(request).advance(
        flag, force=body.force, reason=body.reason, changed_by=principal.name, via=principal.via
    )
    return _done(request, flag)


@router.post("/v1/rollouts/{flag}/pause")
def pause_rollout(
    request: Request, principal: Writer, flag: FlagName, body: Annotated[CommandBody | None, Body()] = None
) -> dict[str, Any]:
    """Pause the running rollout; the flag keeps its percentage."""
    body = body or CommandBody()
    operations_of(request).pause(flag, reason=body.reason, changed_by=principal.name, via=principal.via)
    return _done(request, flag)


@router.post("/v1/rollouts/{flag}/resume")
def resume_rollout(
    request: Request, principal: Writer, flag: FlagName, body: Annotated[CommandBody | None, Body()] = None
) -> dict[str, Any]:
    """Resume the paused rollout with its bake time kept."""
    body = body or CommandBody()
    operations_of(request).resume(flag, reason=body.reason, changed_by=principal.name, via=principal.via)
    return _done(request, flag)


@router.post("/v1/rollouts/{flag}/abort")
def abort_rollout(
    request: Request, principal: Writer, flag: FlagName, body: Annotated[CommandBody | None, Body()] = None
) -> dict[str, Any]:
    """Emergency rollback: end the rollout and disable the flag at 0 %."""
    body = body or CommandBody()
    operations_of(request).abort(flag, reason=body.reason, changed_by=principal.name, via=principal.via)
    return _done(request, flag)
