"""Rate-limit policies and their resolution: actor override, then tier, then global."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rampgate.core.names import check_action, check_actor_id, check_actor_type, check_tier
from rampgate.errors import InvalidInput

ALGORITHMS: tuple[str, ...] = ("token_bucket", "fixed_window", "sliding_window", "gcra")
SCOPES: tuple[str, ...] = ("global", "tier", "actor")
FAIL_MODES: tuple[str, ...] = ("open", "closed")
MAX_LIMIT = 1_000_000_000
MAX_WINDOW_SECONDS = 366 * 86400


@dataclass(frozen=True, slots=True)
class Policy:
    """One row of ``rate_limit_configs``."""

    scope: str
    action: str
    limit_value: int
    window_seconds: int
    algorithm: str = "token_bucket"
    tier: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    burst: int | None = None
    cost_per_action: int = 1
    fail_mode: str = "open"
    enabled: bool = True
    config_id: int | None = None
    # Derived once, because the request path reads them on every decision.
    name: str = field(init=False, compare=False, repr=False)
    capacity: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.scope == "tier":
            name = f"tier:{self.tier}:{self.action}"
        elif self.scope == "actor":
            name = f"actor:{self.actor_type}/{self.actor_id}:{self.action}"
        else:
            name = f"global:*:{self.action}"
        object.__setattr__(self, "name", name)

        # ``burst`` sizes the bucket of token_bucket and gcra. The window
        # algorithms count at most ``limit_value`` units per window, so they
        # ignore ``burst``.
        capacity = self.limit_value
        if self.burst is not None and self.algorithm in ("token_bucket", "gcra"):
            capacity = self.burst
        object.__setattr__(self, "capacity", capacity)


def check_policy(policy: Policy) -> Policy:
    """Validate every field of ``policy``; raise :class:`InvalidInput` naming the first bad one."""
    if policy.scope not in SCOPES:
        raise InvalidInput("scope", policy.scope, "one of global, tier, actor")
    check_action(policy.action)

    if policy.scope == "tier":
        check_tier(policy.tier)
    elif policy.scope == "actor":
        check_actor_type(policy.actor_type)
        check_actor_id(policy.actor_id)

    if policy.algorithm not in ALGORITHMS:
        raise InvalidInput("algorithm", policy.algorithm, "one of " + ", ".join(ALGORITHMS))
    if not _is_int(policy.limit_value) or not 1 <= policy.limit_value <= MAX_LIMIT:
        raise InvalidInput("limit", policy.limit_value, f"an integer from 1 to {MAX_LIMIT}")
    if not _is_int(policy.window_seconds) or not 1 <= policy.window_seconds <= MAX_WINDOW_SECONDS:
        raise InvalidInput("window", policy.window_seconds, f"whole seconds from 1 to {MAX_WINDOW_SECONDS}")
    if policy.burst is not None and (not _is_int(policy.burst) or not 1 <= policy.burst <= MAX_LIMIT):
        raise InvalidInput("burst", policy.burst, f"an integer from 1 to {MAX_LIMIT}, or none")
    if not _is_int(policy.cost_per_action) or not 1 <= policy.cost_per_action <= 1_000_000:
        raise InvalidInput("cost_per_action", policy.cost_per_action, "an integer from 1 to 1000000")
    if policy.fail_mode not in FAIL_MODES:
        raise InvalidInput("fail_mode", policy.fail_mode, "open or closed")
    return policy


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class PolicyTable:
    """The enabled policies, indexed for lookups on the request path."""

    __slots__ = ("_by_actor", "_by_tier", "_global", "policies")

    def __init__(self, policies: Iterable[Policy]) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self._by_actor: dict[tuple[str, str, str], Policy] = {}
        self._by_tier: dict[tuple[str, str], Policy] = {}
        self._global: dict[str, Policy] = {}

        for policy in self.policies:
            if not policy.enabled:
                continue
            if policy.scope == "actor":
                self._by_actor[(policy.action, str(policy.actor_type), str(policy.actor_id))] = policy
            elif policy.scope == "tier":
                self._by_tier[(policy.action, str(policy.tier))] = policy
            else:
                self._global[policy.action] = policy

    @property
    def has_actor_overrides(self) -> bool:
        return bool(self._by_actor)

    def resolve(self, action: str, tier: str, actor_type: str, actor_id: str) -> Policy | None:
        """Return the most specific enabled policy for the request, or None."""
        if self._by_actor:
            policy = self._by_actor.get((action, actor_type, actor_id))
            if policy is not None:
                return policy
        policy = self._by_tier.get((action, tier))
        if policy is not None:
            return policy
        return self._global.get(action)
