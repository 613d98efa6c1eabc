"""An immutable view of the catalog that the request path reads without I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from rampgate.core.bucketing import _hash
from rampgate.core.flags import ENFORCEMENT_FLAG, Flag
from rampgate.core.names import ACTOR_TYPES, DEFAULT_LEVEL, DEFAULT_TIER, check_action
from rampgate.core.policies import Policy, PolicyTable
from rampgate.core.trust import TrustProfile

_DEFAULT_TRUST = (DEFAULT_TIER, DEFAULT_LEVEL)

# Bound of the per-action caches: any valid action name may be requested, so
# a client sending random names must not grow them without limit.
MAX_CACHED_ACTIONS = 100_000

# Algorithms whose whole state is one theoretical arrival time.
_TAT_ALGORITHMS = frozenset(("token_bucket", "gcra"))


class Route(NamedTuple):
    """How one action is rolled out: the governing flag and its numbers for that action."""

    flag: Flag
    percentage: int
    group: str
    shadow: bool


class DecisionPlan:
    """The request path's resolved route and policy for one ``(action, tier)``, built once per snapshot.

    It combines the action's route and the tier's policy, ignoring actor
    overrides (see :class:`ActionPlans`). Only :class:`ActionPlans` builds it,
    from a route and a policy, and nothing changes it afterwards.
    """

    __slots__ = (
        "action",
        "algorithm",
        "capacity",
        "cost_per_action",
        "group_prefix",
        "interval",
        "key_prefix",
        "limit",
        "memory_tables",
        "percentage",
        "policy",
        "policy_name",
        "shadow",
        "span",
        "tier",
        "window_seconds",
    )

    def __init__(self, action: str, tier: str, route: Route | None, policy: Policy | None) -> None:
        self.action = action
        self.tier = tier

        # Cohort: an action that no flag governs is enforced for every actor.
        if route is None:
            self.percentage = 100
            self.group_prefix = ""
            self.shadow = False
        else:
            self.percentage = route.percentage
            self.group_prefix = f"{route.group}:"
            self.shadow = route.shadow

        self.policy = policy
        if policy is None:
            self.policy_name = None
            self.algorithm = ""
            self.limit = 0
            self.window_seconds = 0
            self.capacity = 0
            self.cost_per_action = 1
            self.key_prefix = ""
            self.memory_tables: dict[str, str] | None = None
            self.interval = 0.0
            self.span = 0.0
            return

        self.policy_name = policy.name
        self.algorithm = policy.algorithm
        self.limit = policy.limit_value
        self.window_seconds = policy.window_seconds
        self.capacity = policy.capacity
        self.cost_per_action = policy.cost_per_action
        # The counter key is key_prefix + "<actor_type>:<actor_id>}", the same
        # string as rampgate.stores.base.counter_key.
        self.key_prefix = f"{policy.algorithm}:{policy.name}:{{"
        # MemoryCounterStore.consume_tat's table per actor type: the key up
        # to the actor id, where rampgate.stores.memory.split_counter_key cuts
        # it. The cut falls there only when the policy name has no "{". An
        # actor policy's name may contain one, so such a plan counts through
        # consume with the whole key.
        self.memory_tables = None
        if policy.algorithm in _TAT_ALGORITHMS and "{" not in policy.name:
            self.memory_tables = {actor_type: f"{self.key_prefix}{actor_type}:" for actor_type in ACTOR_TYPES}
        # The numbers of MemoryCounterStore.consume_tat, computed by the same
        # expressions as rampgate.core.algorithms.consume_tat, so they are
        # the same floats.
        self.interval = policy.window_seconds / policy.limit_value
        self.span = policy.capacity * self.interval


class ActionPlans:
    """The decision plans of one action: one per tier, built on first use.

    ``overridden`` contains the ``(actor_type, actor_id)`` pairs that have an
    enabled actor policy for this action; their requests take the general path.
    ``default`` is the plan of tier B, the tier of every actor without a trust
    profile.
    """

    __slots__ = ("_snapshot", "action", "by_tier", "default", "overridden")

    def __init__(self, snapshot: CatalogSnapshot, action: str, overridden: frozenset[tuple[str, str]]) -> None:
        self._snapshot = snapshot
        self.action = action
        self.by_tier: dict[str, DecisionPlan] = {}
        self.overridden = overridden
        self.default = self.plan(DEFAULT_TIER)

    def plan(self, tier: str) -> DecisionPlan:
        """Return the plan for ``tier``, building it on first use."""
        try:
            return self.by_tier[tier]
        except KeyError:
            pass
        snapshot = self._snapshot
        # resolve() with an actor that has no override returns the tier or global policy.
        policy = snapshot.policies.resolve(self.action, tier, "", "")
        plan = DecisionPlan(self.action, tier, snapshot.route(self.action), policy)
        self.by_tier[tier] = plan
        return plan


class CatalogSnapshot:
    """Flags, policies and trust profiles at one moment, indexed for the request path.

    The governing flag of an action is a flag whose ``config.actions`` lists it;
    failing that, a flag without that list (``rate_limit_enforcement`` first,
    then by name). An action that no flag governs is enforced.
    """

    __slots__ = ("_overrides", "_routes", "action_plans", "flags", "policies", "trust", "version")

    def __init__(
        self,
        flags: Iterable[Flag] = (),
        policies: Iterable[Policy] = (),
        trust: Iterable[TrustProfile] = (),
        version: int = 0,
    ) -> None:
        self.flags: dict[str, Flag] = {flag.name: flag for flag in flags}
        self.policies = PolicyTable(policies)
        self.trust: dict[tuple[str, str], tuple[str, str]] = {
            (profile.actor_type, profile.actor_id): (profile.risk_tier, profile.enforcement_level)
            for profile in trust
        }
        self.version = version
        self._routes: dict[str, Route | None] = {}

        # Actor overrides grouped by action, for ActionPlans.overridden.
        self._overrides: dict[str, set[tuple[str, str]]] = {}
        for policy in self.policies.policies:
            if policy.enabled and policy.scope == "actor":
                pair = (str(policy.actor_type), str(policy.actor_id))
                self._overrides.setdefault(policy.action, set()).add(pair)

        # Filled by plans_for(); Gate.decide reads it directly, so only
        # actions that passed validation are ever keys.
        self.action_plans: dict[str, ActionPlans] = {}

    def plans_for(self, action: str) -> ActionPlans:
        """Return the plans of a validated ``action``, cached up to ``MAX_CACHED_ACTIONS`` actions."""
        plans = self.action_plans.get(action)
        if plans is not None:
            return plans
        plans = ActionPlans(self, action, frozenset(self._overrides.get(action, ())))
        if len(self.action_plans) < MAX_CACHED_ACTIONS:
            self.action_plans[action] = plans
        return plans

    def is_in_cohort(self, action: str, actor_id: str) -> bool:
        """Return whether the flag that governs ``action`` enforces ``actor_id`` now.

        An action that no flag governs is enforced for every actor. Raises
        :class:`rampgate.errors.InvalidInput` for an invalid action name.
        The route is read from the per-action cache that ``Gate.decide``
        fills, so a repeated call costs one hash (see BENCHMARKS.md,
        comparison 3).
        """
        plans = self.action_plans.get(action)
        if plans is None:
            check_action(action)
            plans = self.plans_for(action)
        plan = plans.default
        percentage = plan.percentage
        if percentage >= 100:
            return True
        if percentage <= 0:
            return False
        return _hash(plan.group_prefix + actor_id, 0, False) % 100 + 1 <= percentage

    def route(self, action: str) -> Route | None:
        """Return the rollout route of ``action``, None when no flag governs it."""
        try:
            return self._routes[action]
        except KeyError:
            pass

        route = None
        flag = self._governing_flag(action)
        if flag is not None:
            route = Route(flag, flag.percentage_for(action), flag.group, flag.shadow)
        if len(self._routes) < MAX_CACHED_ACTIONS:
            self._routes[action] = route
        return route

    def _governing_flag(self, action: str) -> Flag | None:
        listed = [f for f in self.flags.values() if f.actions is not None and action in f.actions]
        if listed:
            return min(listed, key=lambda f: f.name)
        unlisted = [f for f in self.flags.values() if f.actions is None]
        if not unlisted:
            return None
        return min(unlisted, key=lambda f: (f.name != ENFORCEMENT_FLAG, f.name))

    def trust_of(self, actor_type: str, actor_id: str) -> tuple[str, str]:
        """Return ``(tier, enforcement level)``: B and E0 for an actor without a profile."""
        return self.trust.get((actor_type, actor_id), _DEFAULT_TRUST)
