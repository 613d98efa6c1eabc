"""Request and response bodies of the HTTP API, as pydantic models (they also make ``/openapi.json``).

Request models forbid unknown fields, so a misspelt field is a 422 naming
it, and they are strict: ``"50"`` is not a percentage.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import json

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from rampgate.core.decision import MODES, REASONS
from rampgate.core.names import ACTOR_TYPES, ENFORCEMENT_LEVELS, MAX_ACTOR_ID_LENGTH, TIERS
from rampgate.core.policies import ALGORITHMS, FAIL_MODES, MAX_LIMIT, MAX_WINDOW_SECONDS, SCOPES

ActionName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_:.\-]{1,64}$")]
ActorType = Literal[ACTOR_TYPES]  # type: ignore[valid-type]
# Strings that reach the catalog exclude NUL, which PostgreSQL text and jsonb cannot store.
NO_NUL = r"^[^\x00]*$"
ActorId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ACTOR_ID_LENGTH, pattern=NO_NUL)]
Tier = Literal[TIERS]  # type: ignore[valid-type]
Level = Literal[ENFORCEMENT_LEVELS]  # type: ignore[valid-type]
Percentage = Annotated[int, Field(ge=0, le=100)]
RequestId = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)]
Timestamp = Annotated[str, Field(description="ISO 8601 UTC, for example 2026-12-04T10:00:00Z")]

MAX_APPEAL_TEXT = 2000
MAX_NOTE_TEXT = 2000
MAX_DM_BODY = 10_000
MAX_CONTEXT_BYTES = 4096


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    """Body of every 4xx and 5xx answer except the 429 of a protected endpoint."""

    error: str = Field(description="invalid_input, unauthorized, forbidden, not_found, conflict, ...")
    message: str
    field: str | None = Field(None, description="the input at fault, for invalid_input")
    value: Any = Field(None, description="the value given, shortened to 80 characters")


# -- decisions ----------------------------------------------------------------


class CheckRequest(RequestModel):
    actor_type: ActorType
    actor_id: ActorId
    action: ActionName
    cost: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    request_id: RequestId | None = None
    context: dict[str, Any] | None = Field(
        None, description=f"stored with the audit row of an enforced decision; at most {MAX_CONTEXT_BYTES} bytes as JSON"
    )

    @field_validator("context")
    @classmethod
    def _context_storable(cls, context: dict[str, Any] | None) -> dict[str, Any] | None:
        if context is None:
            return None
        problem = context_problem(context)
        if problem is not None:
            raise ValueError(problem)
        return context


def context_problem(context: dict[str, Any]) -> str | None:
    """Say why ``context`` cannot be stored with an audit row, or return None when it can."""
    try:
        encoded = json.dumps(context, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return "must be JSON without NaN, infinities or unpaired surrogates"
    if _has_nul(context):
        return "must not contain NUL characters"
    if len(encoded) > MAX_CONTEXT_BYTES:
        return f"must be at most {MAX_CONTEXT_BYTES} bytes as JSON, got {len(encoded)}"
    return None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class DecisionBody(BaseModel):
    """The decision fields: ``allowed`` is what the caller must do."""

    allowed: bool
    mode: Literal[MODES]  # type: ignore[valid-type]
    would_block: bool
    reason: Literal[REASONS]  # type: ignore[valid-type]
    action: str
    tier: str
    policy: str | None
    limit: int | None
    window_seconds: int | None
    remaining: int | None
    reset_after: float = Field(description="seconds until the counter is full again")
    retry_after: float | None = Field(description="0 when allowed, null when the request can never pass")
    message: str | None = Field(description="when blocked, a sentence for the end user in the Accept-Language")


class BlockedBody(BaseModel):
    """The 429 body of a protected endpoint."""

    error: Literal["rate_limited"]
    action: str
    tier: str
    retryAfter: int | None = Field(description="the integer in Retry-After; null when the request can never pass")
    limit: int | None
    windowSeconds: int | None
    message: str


# -- protected examples -------------------------------------------------------


class DirectMessage(RequestModel):
    target_user_id: ActorId
    body: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DM_BODY)]


class DirectMessageSent(BaseModel):
    sent: bool
    message_id: str
    target_user_id: str


class UploadRequest(RequestModel):
    content_type: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None


class UploadAuthorized(BaseModel):
    authorized: bool
    upload_id: str
    content_type: str | None
    expires_in: int = Field(description="seconds the authorisation stays valid")


# -- flags ----------------------------------------------------------------------


class FlagBody(BaseModel):
    name: str
    enabled: bool
    percentage: int
    action_percentages: dict[str, int]
    config: dict[str, Any]


class FlagPatch(RequestModel):
    enabled: bool | None = None
    percentage: Percentage | None = None
    action_percentages: dict[ActionName, Percentage | None] | None = Field(
        None,
        max_length=1000,
        description="per-action percentages, merged into the ones already set; null for an action removes its override",
    )


# -- limits ---------------------------------------------------------------------


class PolicyBody(BaseModel):
    config_id: int | None
    policy: str
    scope: str
    tier: str | None
    actor_type: str | None
    actor_id: str | None
    action: str
    algorithm: str
    limit: int
    window_seconds: int
    burst: int | None
    cost_per_action: int
    fail_mode: str
    enabled: bool


class PolicyPut(RequestModel):
    scope: Literal[SCOPES]  # type: ignore[valid-type]
    tier: Tier | None = Field(None, description="required with scope tier, absent otherwise")
    actor_type: ActorType | None = Field(None, description="required with scope actor, absent otherwise")
    actor_id: ActorId | None = Field(None, description="required with scope actor, absent otherwise")
    action: ActionName
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)]
    window_seconds: Annotated[int, Field(ge=1, le=MAX_WINDOW_SECONDS)]
    burst: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = None
    algorithm: Literal[ALGORITHMS] = "token_bucket"  # type: ignore[valid-type]
    fail_mode: Literal[FAIL_MODES] = "open"  # type: ignore[valid-type]
    cost_per_action: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    enabled: bool = True


# -- trust ----------------------------------------------------------------------


class TrustBody(BaseModel):
    actor_type: str
    actor_id: str
    tier: str
    enforcement_level: str
    trust_score: float | None
    signals: dict[str, Any]


class TrustPut(RequestModel):
    actor_type: ActorType
    actor_id: ActorId
    tier: Tier
    enforcement_level: Level | None = None
    trust_score: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None


# -- appeals --------------------------------------------------------------------


class AppealCreate(RequestModel):
    action: ActionName
    request_id: RequestId | None = None
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_APPEAL_TEXT, pattern=NO_NUL)]


class AppealResolve(RequestModel):
    note: Annotated[str, StringConstraints(max_length=MAX_NOTE_TEXT, pattern=NO_NUL)] | None = None


class AppealBody(BaseModel):
    appeal_id: int
    actor_type: str
    actor_id: str
    action: str
    request_id: str | None
    text: str
    status: Literal["open", "upheld", "rejected"]
    created_at: Timestamp
    resolved_at: Timestamp | None
    resolved_by: str | None
    resolution_note: str | None


# -- history and health ---------------------------------------------------------


class ChangeBody(BaseModel):
    change_id: int
    at: Timestamp
    changed_by: str
    via: str
    entity: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class HealthBody(BaseModel):
    status: Literal["ok"]


class ReadinessBody(BaseModel):
    status: Literal["ready", "unavailable"]
    catalog: Literal["ok", "unreachable"]
    counter_store: Literal["ok", "unreachable"]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed JSON"},
    401: {"model": ErrorBody, "description": "missing or wrong token"},
    403: {"model": ErrorBody, "description": "the token's role may not do this"},
    422: {"model": ErrorBody, "description": "invalid input; `field` names it"},
}
