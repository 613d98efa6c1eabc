"""The decision for one request, and the rounding rules of its numbers."""

from __future__ import annotations

from math import ceil
from typing import Any

from rampgate.core.messages import blocked_message

# Modes of a decision.
ENFORCE = "enforce"  # actor in the cohort: a block is returned as a block
SHADOW = "shadow"  # outside the cohort: counted as if enforced, always allowed
BYPASS = "bypass"  # outside the cohort with shadow off, or no policy: counted nowhere
FAIL_OPEN = "fail_open"  # a store failed or timed out: allowed
MODES: tuple[str, ...] = (ENFORCE, SHADOW, BYPASS, FAIL_OPEN)

# Reasons of a decision.
OK = "ok"
LIMITED = "limited"
EXCEEDS_CAPACITY = "exceeds_capacity"
SUSPENDED = "suspended"
NO_POLICY = "no_policy"
STORE_ERROR = "store_error"
REASONS: tuple[str, ...] = (OK, LIMITED, EXCEEDS_CAPACITY, SUSPENDED, NO_POLICY, STORE_ERROR)

SUSPENDED_RETRY_AFTER = 3600.0
STORE_ERROR_RETRY_AFTER = 1.0


def round_up_ms(seconds: float) -> float:
    """Round a duration up to the millisecond, ignoring float noise below 1 ns."""
    if seconds <= 0:
        return 0.0
    return ceil(seconds * 1000 - 1e-6) / 1000


def header_seconds(seconds: float) -> int:
    """Return the whole seconds (at least 1) that ``Retry-After`` and ``t=`` carry."""
    return max(1, ceil(seconds - 1e-9))


class Decision:
    """The outcome of one ``(actor, action, cost)`` request.

    A plain slotted class rather than a frozen dataclass: one is built per
    request, and the dataclass's frozen ``__setattr__`` costs about a third of
    the construction time on CPython 3.11.
    """

    __slots__ = (
        "action",
        "actor_id",
        "actor_type",
        "allowed",
        "in_cohort",
        "limit",
        "mode",
        "next_unit_after",
        "policy",
        "reason",
        "remaining",
        "reset_after",
        "retry_after",
        "tier",
        "window_seconds",
        "would_block",
    )

    def __init__(
        self,
        allowed: bool,
        mode: str,
        would_block: bool,
        reason: str,
        action: str,
        tier: str,
        policy: str | None,
        limit: int | None,
        window_seconds: int | None,
        remaining: int | None,
        reset_after: float,
        retry_after: float | None,
        actor_type: str,
        actor_id: str,
        in_cohort: bool,
        next_unit_after: float | None = None,
    ) -> None:
        self.allowed = allowed
        self.mode = mode
        self.would_block = would_block
        self.reason = reason
        self.action = action
        self.tier = tier
        self.policy = policy
        self.limit = limit
        self.window_seconds = window_seconds
        self.remaining = remaining
        self.reset_after = reset_after
        self.retry_after = retry_after
        self.actor_type = actor_type
        self.actor_id = actor_id
        self.in_cohort = in_cohort
        self.next_unit_after = next_unit_after

    def message(self, language: str = "en") -> str | None:
        """Return the end-user sentence for a blocked decision, None when allowed."""
        if self.allowed:
            return None
        return blocked_message(self.reason, self.retry_after, language)

    @property
    def retry_after_header(self) -> int | None:
        """``Retry-After`` in whole seconds, None when the request can never pass."""
        if self.retry_after is None:
            return None
        return header_seconds(self.retry_after)

    def to_dict(self, language: str = "en") -> dict[str, Any]:
        """Return the public decision fields, with ``message`` in ``language``."""
        return {
            "allowed": self.allowed,
            "mode": self.mode,
            "would_block": self.would_block,
            "reason": self.reason,
            "action": self.action,
            "tier": self.tier,
            "policy": self.policy,
            "limit": self.limit,
            "window_seconds": self.window_seconds,
            "remaining": self.remaining,
            "reset_after": self.reset_after,
            "retry_after": self.retry_after,
            "message": self.message(language),
        }

    def __repr__(self) -> str:
        return (
            f"Decision(allowed={self.allowed}, mode={self.mode!r}, reason={self.reason!r}, "
            f"policy={self.policy!r}, remaining={self.remaining}, retry_after={self.retry_after})"
        )
