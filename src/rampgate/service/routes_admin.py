"""Admin API: flags, limits, trust profiles and the config-change history.

Every endpoint is a plain ``def``, so FastAPI runs its synchronous catalog
calls in the threadpool and the event loop never waits on the database.
Writes go through :class:`rampgate.catalog.repository.Catalog`, which
records who made each change, when, and the row before and after; then the
local gate reloads at once, and the other workers follow through the
catalog watcher.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from rampgate.catalog.repository import Catalog, flag_to_dict, policy_to_dict, trust_to_dict
from rampgate.core.names import ACTOR_TYPES, MAX_ACTOR_ID_LENGTH, check_actor_id, check_actor_type
from rampgate.core.policies import Policy
from rampgate.errors import InvalidInput, NotFound
from rampgate.service.auth import Principal, require_admin_read, require_admin_write
from rampgate.service.schemas import (
    ERROR_RESPONSES,
    ChangeBody,
    ErrorBody,
    FlagBody,
    FlagPatch,
    PolicyBody,
    PolicyPut,
    TrustBody,
    TrustPut,
)
from rampgate.service.state import gate_of

logger = logging.getLogger(__name__)

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "not found"}}
FLAG_NAME_PATTERN = r"^[A-Za-z0-9_:.\-]{1,128}$"
ACTION_PATTERN = r"^[a-z0-9_:.\-]{1,64}$"

router = APIRouter(tags=["admin"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require_admin_read)]
Writer = Annotated[Principal, Depends(require_admin_write)]
FlagName = Annotated[str, Path(pattern=FLAG_NAME_PATTERN, description="flag name, for example rate_limit_enforcement")]


def catalog_of(request: Request) -> Catalog:
    return gate_of(request).catalog


def _refresh(request: Request) -> None:
    """Reload the local gate's snapshot so this worker enforces the change from the next request."""
    gate_of(request).refresh()


# -- flags ----------------------------------------------------------------------


@router.get("/v1/flags", response_model=list[FlagBody])
def list_flags(request: Request, principal: Reader) -> list[dict[str, Any]]:
    return [flag_to_dict(flag) for flag in catalog_of(request).list_flags()]


@router.get("/v1/flags/{name}", response_model=FlagBody, responses=NOT_FOUND)
def get_flag(name: FlagName, request: Request, principal: Reader) -> dict[str, Any]:
    return flag_to_dict(catalog_of(request).get_flag(name))


@router.patch("/v1/flags/{name}", response_model=FlagBody, responses=NOT_FOUND)
def patch_flag(name: FlagName, body: FlagPatch, request: Request, principal: Writer) -> dict[str, Any]:
    """Change the given fields of a flag; per-action percentages merge into the ones already set.

    A body without fields changes nothing and returns the flag.
    """
    catalog = catalog_of(request)
    if body.enabled is None and body.percentage is None and not body.action_percentages:
        return flag_to_dict(catalog.get_flag(name))

    flag = catalog.set_flag(
        name,
        enabled=body.enabled,
        percentage=body.percentage,
        action_percentages=body.action_percentages or None,
        changed_by=principal.name,
        via=principal.via,
    )
    _refresh(request)
    return flag_to_dict(flag)


@router.post("/v1/flags/{name}/rollback", response_model=FlagBody, responses=NOT_FOUND)
def rollback_flag(name: FlagName, request: Request, principal: Writer) -> dict[str, Any]:
    """Disable the flag at 0 % and clear its per-action percentages: every actor is allowed again."""
    catalog = catalog_of(request)
    config = dict(catalog.get_flag(name).config)
    config.pop("action_percentages", None)
    flag = catalog.set_flag(
        name, enabled=False, percentage=0, config=config, changed_by=principal.name, via=principal.via
    )
    _refresh(request)
    logger.warning("flag.rolled_back", extra={"flag": name, "changed_by": principal.name, "via": principal.via})
    return flag_to_dict(flag)


# -- limits ---------------------------------------------------------------------


@router.get("/v1/limits", response_model=list[PolicyBody])
def list_limits(
    request: Request,
    principal: Reader,
    action: Annotated[str | None, Query(pattern=ACTION_PATTERN)] = None,
    tier: Literal["A", "B", "C", "D"] | None = None,
) -> list[dict[str, Any]]:
    return [policy_to_dict(policy) for policy in catalog_of(request).list_policies(action=action, tier=tier)]


def _policy_from_body(body: PolicyPut) -> Policy:
    """Build the policy, rejecting the fields that its scope does not use."""
    used = {"global": set(), "tier": {"tier"}, "actor": {"actor_type", "actor_id"}}[body.scope]
    for field in ("tier", "actor_type", "actor_id"):
        value = getattr(body, field)
        if field in used and value is None:
            raise InvalidInput(field, None, f"a value, because scope is {body.scope}")
        if field not in used and value is not None:
            raise InvalidInput(field, value, f"no value, because scope is {body.scope}")

    return Policy(
        scope=body.scope,
        tier=body.tier,
        actor_type=body.actor_type,
        actor_id=body.actor_id,
        action=body.action,
        limit_value=body.limit,
        window_seconds=body.window_seconds,
        burst=body.burst,
        algorithm=body.algorithm,
        fail_mode=body.fail_mode,
        cost_per_action=body.cost_per_action,
        enabled=body.enabled,
    )


@router.put("/v1/limits", response_model=PolicyBody)
def put_limit(body: PolicyPut, request: Request, principal: Writer) -> dict[str, Any]:
    """Insert the policy, or update the one with the same scope, tier, actor and action."""
    policy = _policy_from_body(body)
    stored = catalog_of(request).set_policy(policy, changed_by=principal.name, via=principal.via)
    _refresh(request)
    return policy_to_dict(stored)


@router.delete("/v1/limits/{config_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
def delete_limit(
    config_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: Request, principal: Writer
) -> Response:
    catalog = catalog_of(request)
    matches = [policy for policy in catalog.list_policies() if policy.config_id == config_id]
    if not matches:
        raise NotFound(f"policy {config_id} not found; GET /v1/limits lists the policies")
    catalog.delete_policy(matches[0], changed_by=principal.name, via=principal.via)
    _refresh(request)
    logger.info("policy.deleted", extra={"policy": matches[0].name, "changed_by": principal.name, "via": principal.via})
    return Response(status_code=204)


# -- trust ----------------------------------------------------------------------


@router.get("/v1/trust", response_model=list[TrustBody])
def list_trust(
    request: Request, principal: Reader, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[dict[str, Any]]:
    return [trust_to_dict(profile) for profile in catalog_of(request).list_trust(limit=limit)]


@router.put("/v1/trust", response_model=TrustBody)
def put_trust(body: TrustPut, request: Request, principal: Writer) -> dict[str, Any]:
    """Create or update an actor's trust profile; a field left out keeps its value."""
    profile = catalog_of(request).set_trust(
        body.actor_type,
        body.actor_id,
        tier=body.tier,
        level=body.enforcement_level,
        trust_score=body.trust_score,
        changed_by=principal.name,
        via=principal.via,
    )
    _refresh(request)
    return trust_to_dict(profile)


@router.delete("/v1/trust/{actor_type}/{actor_id:path}", status_code=204, response_class=Response, responses=NOT_FOUND)
def delete_trust(
    actor_type: Literal[ACTOR_TYPES],  # type: ignore[valid-type]
    actor_id: Annotated[str, Path(min_length=1, max_length=MAX_ACTOR_ID_LENGTH)],
    request: Request,
    principal: Writer,
) -> Response:
    check_actor_type(actor_type)
    check_actor_id(actor_id)

    catalog_of(request).delete_trust(actor_type, actor_id, changed_by=principal.name, via=principal.via)
    _refresh(request)
    logger.info("trust.deleted", extra={"actor_type": actor_type, "changed_by": principal.name, "via": principal.via})
    return Response(status_code=204)


# -- change history -------------------------------------------------------------


@router.get("/v1/changes", response_model=list[ChangeBody])
def list_changes(
    request: Request,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    entity: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$", description="flag, policy, trust, appeal, ...")] = None,
) -> list[dict[str, Any]]:
    """Return the newest changes first: who made each, when, through which path, and the row before and after."""
    return catalog_of(request).list_changes(limit=limit, entity=entity)
