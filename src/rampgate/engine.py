"""The decision pipeline, shared by :class:`rampgate.Gate` and :class:`rampgate.AsyncGate`.

A decision takes three steps. :meth:`DecisionEngine.prepare` resolves the
flag, cohort, trust tier and policy from the in-memory snapshot and returns
either a finished decision (no policy, bypass, suspended, exceeds capacity)
or a :class:`CounterRequest`. The gate runs the request against its counter
store, sync or async. :meth:`DecisionEngine.finish` turns the store's outcome,
or its failure, into the decision. No step reads a table.
"""

from __future__ import annotations



from rampgate.core.algorithms import Outcome
from rampgate.core.bucketing import _hash
from rampgate.core.decision import (
    BYPASS,
    ENFORCE,
    EXCEEDS_CAPACITY,
    FAIL_OPEN,
    LIMITED,
    NO_POLICY,
    OK,
    SHADOW,
    STORE_ERROR,
    STORE_ERROR_RETRY_AFTER,
    SUSPENDED,
    SUSPENDED_RETRY_AFTER,
    Decision,
    round_up_ms,
)
from rampgate.core.names import ACTOR_TYPES, SUSPENDED_LEVEL, check_action, check_actor_id
from rampgate.core.names import check_actor_type, check_cost
from rampgate.core.policies import Policy
from rampgate.core.snapshot import CatalogSnapshot

_ACTOR_TYPES = frozenset(ACTOR_TYPES)
_DEFAULT_TRUST = ("B", "E0")


class CounterRequest:
    """A decision waiting for its counter: what the store must run, and what to build after."""

    __slots__ = ("actor_id", "actor_type", "action", "in_cohort", "key", "mode", "policy", "tier", "units")

    def __init__(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        tier: str,
        policy: Policy,
        mode: str,
        in_cohort: bool,
        units: int,
    ) -> None:
        self.actor_type = actor_type
        self.actor_id = actor_id
        self.action = action
        self.tier = tier
        self.policy = policy
        self.mode = mode
        self.in_cohort = in_cohort
        self.units = units
        self.key = f"{policy.algorithm}:{policy.name}:{{{actor_type}:{actor_id}}}"


class DecisionEngine:
    """Pure decision steps over a catalog snapshot."""

    def __init__(self) -> None:
        self._valid_actions: set[str] = set()

    def check_request(self, actor_type: str, actor_id: str, action: str, cost: int) -> None:
        """Raise :class:`rampgate.errors.InvalidInput` naming the first invalid argument."""
        if actor_type not in _ACTOR_TYPES:
            check_actor_type(actor_type)
        if actor_id.__class__ is not str or not 0 < len(actor_id) <= 256 or "\x00" in actor_id:
            check_actor_id(actor_id)
        if action not in self._valid_actions:
            check_action(action)
            if len(self._valid_actions) < 100_000:
                self._valid_actions.add(action)
        if cost.__class__ is not int or not 0 < cost <= 1_000_000:
            check_cost(cost)

    def prepare(
        self, snapshot: CatalogSnapshot, actor_type: str, actor_id: str, action: str, cost: int
    ) -> Decision | CounterRequest:
        """Resolve everything that needs no counter; see the module docstring."""
        self.check_request(actor_type, actor_id, action, cost)

        # Cohort: an action that no flag governs is enforced.
        route = snapshot.route(action)
        if route is None:
            in_cohort = True
            shadow = False
        else:
            percentage = route.percentage
            in_cohort = percentage >= 100 or (
                percentage > 0 and _hash(f"{route.group}:{actor_id}", 0, False) % 100 + 1 <= percentage
            )
            shadow = route.shadow

        tier, level = snapshot.trust.get((actor_type, actor_id), _DEFAULT_TRUST)
        policy = snapshot.policies.resolve(action, tier, actor_type, actor_id)
        if policy is None:
            return Decision(
                True, BYPASS, False, NO_POLICY, action, tier, None, None, None, None, 0.0, 0.0,
                actor_type, actor_id, in_cohort,
            )

        if not in_cohort and not shadow:
            return Decision(
                True, BYPASS, False, OK, action, tier, policy.name, policy.limit_value, policy.window_seconds,
                None, 0.0, 0.0, actor_type, actor_id, in_cohort,
            )

        mode = ENFORCE if in_cohort else SHADOW
        if level == SUSPENDED_LEVEL:
            return Decision(
                not in_cohort, mode, True, SUSPENDED, action, tier, policy.name, policy.limit_value,
                policy.window_seconds, 0, SUSPENDED_RETRY_AFTER, SUSPENDED_RETRY_AFTER,
                actor_type, actor_id, in_cohort, SUSPENDED_RETRY_AFTER,
            )

        units = cost * policy.cost_per_action
        if units > policy.capacity:
            return Decision(
                not in_cohort, mode, True, EXCEEDS_CAPACITY, action, tier, policy.name, policy.limit_value,
                policy.window_seconds, None, 0.0, None, actor_type, actor_id, in_cohort,
            )

        return CounterRequest(actor_type, actor_id, action, tier, policy, mode, in_cohort, units)

    @staticmethod
    def finish(request: CounterRequest, outcome: Outcome) -> Decision:
        """Build the decision from the store's outcome."""
        allowed, remaining, reset_after, retry_after, next_unit_after = outcome[:5]
        policy = request.policy
        in_cohort = request.in_cohort
        return Decision(
            allowed or not in_cohort,
            request.mode,
            not allowed,
            OK if allowed else LIMITED,
            request.action,
            request.tier,
            policy.name,
            policy.limit_value,
            policy.window_seconds,
            remaining,
            round_up_ms(reset_after),
            0.0 if allowed else round_up_ms(retry_after),
            request.actor_type,
            request.actor_id,
            in_cohort,
            next_unit_after,
        )

    @staticmethod
    def fail(request: CounterRequest) -> Decision:
        """Build the decision for a store that failed or timed out.

        A cohort actor under a ``fail_mode = 'closed'`` policy is blocked for a
        second; every other request is allowed in mode ``fail_open``.
        """
        policy = request.policy
        if request.in_cohort and policy.fail_mode == "closed":
            return Decision(
                False, ENFORCE, True, STORE_ERROR, request.action, request.tier, policy.name,
                policy.limit_value, policy.window_seconds, 0, STORE_ERROR_RETRY_AFTER, STORE_ERROR_RETRY_AFTER,
                request.actor_type, request.actor_id, True, STORE_ERROR_RETRY_AFTER,
            )
        return Decision(
            True, FAIL_OPEN, False, STORE_ERROR, request.action, request.tier, policy.name,
            policy.limit_value, policy.window_seconds, None, 0.0, 0.0,
            request.actor_type, request.actor_id, request.in_cohort,
        )
