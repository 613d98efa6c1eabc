"""Recommended limits: the smallest limit per tier and action that passes a failed gate on the trace.

When a ratio gate (``block_rate``, ``false_positive_rate``,
``blocked_actor_rate``) fails, the failing stage's counter requests are
replayed per (tier, action) against candidate limits with the same window,
burst and algorithm, through the same pure algorithm functions that the
memory store runs. The candidate limits of one pair are searched by
bisection: a larger limit admits more, so the gate value falls as the limit
grows (the search verifies the limit it returns, because a token bucket is
not strictly monotone request by request).

Pairs are raised one at a time, the pair with the most blocks (or blocked
actors, for the actor-based gates) first. Each one gets the smallest limit
that passes the gate with the pairs before it at their recommended limits and
the pairs after it treated as unlimited, so the recommendations applied
together pass the gate on the failing stage. A pair whose current limit
already passes under those conditions keeps it and is not listed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rampgate.core.algorithms import ALGORITHM_FUNCTIONS
from rampgate.core.bucketing import is_in_cohort
from rampgate.core.gates import PASS, StageMetrics, evaluate_gate
from rampgate.core.plans import GateSpec, Plan
from rampgate.core.policies import Policy
from rampgate.simulate.report import Recommendation

logger = logging.getLogger(__name__)

RATIO_METRICS = frozenset({"block_rate", "false_positive_rate", "blocked_actor_rate"})

# One counter request seen by the replay:
# (virtual time, tier, policy name, actor as "type:id", allowed, is a bot).
CounterRecord = tuple[float, str, str, str, bool, bool]
# (time, actor id, counts towards the stage, is a bot)
_PairEvent = tuple[float, str, bool, bool]
Pair = tuple[str, str]  # (tier, policy name)


@dataclass(slots=True)
class StageEvidence:
    """What the recommendation search needs from the failing stage.

    ``records`` starts one counter memory (the longest time any policy's
    counter takes to refill) before the stage, so counters enter the stage
    warm. ``started_at`` and ``judged_at`` bound the requests that count
    towards the gate.

    NOTE: a candidate limit's counters start fresh at the beginning of
    ``records``. That is exact for an actor idle then, and an approximation
    for one that was busy across that moment.
    ``fixed_blocked`` and ``fixed_blocked_actors`` are enforced blocks that no
    limit moves (suspended actors, requests beyond capacity).
    """

    percentage: int
    group: str
    started_at: float
    judged_at: float
    decisions: int
    actors: int
    abusers: frozenset[str]
    records: list[CounterRecord]
    fixed_blocked: int = 0
    fixed_blocked_actors: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _PairTrace:
    tier: str
    policy: Policy
    events: list[_PairEvent]
    blocked: int
    blocked_actors: frozenset[str]
    busiest_units: int


def recommend_limits(plan: Plan, failed_gate: dict[str, object], evidence: StageEvidence, policies: dict[str, Policy]) -> list[Recommendation]:
    """Return the limits that pass ``failed_gate`` on the failing stage, sorted by tier and action.

    Return an empty list when the gate is not a ratio gate, when no limit
    change can pass it, or when it already passes without a change.
    """
    metric = str(failed_gate.get("metric"))
    spec = next((gate for gate in plan.gates if gate.metric == metric), None)
    if spec is None or metric not in RATIO_METRICS:
        return []

    traces, fixed_blocked, fixed_actors = _split_by_pair(evidence, policies)
    evaluate = _evaluator(spec, plan, evidence, traces, fixed_blocked, fixed_actors)

    # Limits per pair: None stands for unlimited, an int for a candidate.
    order = sorted(traces, key=lambda pair: (-_contribution(metric, traces[pair]), pair))
    chosen: dict[Pair, int | None] = {pair: None for pair in traces}
    if not evaluate(chosen):
        logger.info("simulate.no_recommendation", extra={"gate": metric, "reason": "fails even without limits"})
        return []

    recommendations = []
    for pair in order:
        trace = traces[pair]
        current = trace.policy.limit_value
        chosen[pair] = current
        if evaluate(chosen):
            continue
        limit = _smallest_passing_limit(pair, trace, chosen, evaluate)
        if limit is None:
            # NOTE: only a burst smaller than a same-instant spike gets here;
            # the pair is left unlimited, so later pairs may be under-raised.
            chosen[pair] = None
            logger.warning("simulate.no_recommendation", extra={"gate": metric, "policy": pair[1]})
            continue
        chosen[pair] = limit
        recommendations.append(
            Recommendation(
                trace.tier, trace.policy.action, limit, trace.policy.window_seconds, current, trace.policy.name,
                trace.policy.algorithm, trace.policy.burst,
            )
        )
    return sorted(recommendations, key=lambda item: (item.tier, item.action))


def _split_by_pair(
    evidence: StageEvidence, policies: dict[str, Policy]
) -> tuple[dict[Pair, _PairTrace], int, set[str]]:
    """Group the cohort's counter requests by (tier, policy); actor overrides become fixed blocks."""
    cohort: dict[str, bool] = {}
    events: dict[Pair, list[_PairEvent]] = {}
    fixed_blocked = evidence.fixed_blocked
    fixed_actors = set(evidence.fixed_blocked_actors)
    started, judged = evidence.started_at, evidence.judged_at

    for at, tier, policy_name, actor, allowed, is_bot in evidence.records:
        if at >= judged:
            break
        member = cohort.get(actor)
        if member is None:
            # The bucket hashes the actor id alone, without its type.
            member = cohort[actor] = is_in_cohort(evidence.group, actor.partition(":")[2], evidence.percentage)
        if not member:
            continue
        in_stage = at >= started
        policy = policies[policy_name]
        if policy.scope == "actor":
            if in_stage and not allowed:
                fixed_blocked += 1
                fixed_actors.add(actor)
            continue
        events.setdefault((tier, policy_name), []).append((at, actor, in_stage, is_bot))

    traces = {}
    for pair, pair_events in events.items():
        policy = policies[pair[1]]
        blocked, blocked_actors = _replay_pair(pair_events, policy, policy.limit_value)
        units: dict[str, int] = {}
        for _, actor_id, _, _ in pair_events:
            units[actor_id] = units.get(actor_id, 0) + policy.cost_per_action
        traces[pair] = _PairTrace(pair[0], policy, pair_events, blocked, blocked_actors, max(units.values()))
    return traces, fixed_blocked, fixed_actors


def _replay_pair(events: list[_PairEvent], policy: Policy, limit: int) -> tuple[int, frozenset[str]]:
    """Run one pair's requests through its algorithm at ``limit``; return blocks and blocked actors in the stage."""
    candidate = policy if limit == policy.limit_value else replace(policy, limit_value=limit)
    consume = ALGORITHM_FUNCTIONS[candidate.algorithm]
    window = candidate.window_seconds
    capacity = candidate.capacity
    units = candidate.cost_per_action
    states: dict[str, object] = {}
    blocked = 0
    blocked_actors: set[str] = set()

    for at, actor_id, in_stage, _ in events:
        outcome = consume(states.get(actor_id), at, units, limit, window, capacity)
        if outcome[0]:
            states[actor_id] = outcome[5]
        elif in_stage:
            blocked += 1
            blocked_actors.add(actor_id)
    return blocked, frozenset(blocked_actors)


def _evaluator(
    spec: GateSpec,
    plan: Plan,
    evidence: StageEvidence,
    traces: dict[Pair, _PairTrace],
    fixed_blocked: int,
    fixed_actors: set[str],
) -> Callable[[dict[Pair, int | None]], bool]:
    legitimate_actors = evidence.actors - len(evidence.abusers)
    cache: dict[tuple[Pair, int], tuple[int, frozenset[str]]] = {}

    def outcome_at(pair: Pair, limit: int) -> tuple[int, frozenset[str]]:
        trace = traces[pair]
        if limit == trace.policy.limit_value:
            return trace.blocked, trace.blocked_actors
        key = (pair, limit)
        if key not in cache:
            cache[key] = _replay_pair(trace.events, trace.policy, limit)
        return cache[key]

    def passes(limits: dict[Pair, int | None]) -> bool:
        blocked = fixed_blocked
        blocked_actors = set(fixed_actors)
        for pair, limit in limits.items():
            if limit is None:
                continue
            count, actors = outcome_at(pair, limit)
            blocked += count
            blocked_actors |= actors
        metrics = StageMetrics(
            decisions=evidence.decisions,
            blocked=blocked,
            actors=evidence.actors,
            blocked_actors=len(blocked_actors),
            legitimate_actors=legitimate_actors,
            legitimate_blocked_actors=len(blocked_actors - evidence.abusers),
        )
        return evaluate_gate(spec, metrics, plan.min_decisions).status == PASS

    return passes


def _contribution(metric: str, trace: _PairTrace) -> int:
    if metric == "block_rate":
        return trace.blocked
    return len(trace.blocked_actors)


def _smallest_passing_limit(
    pair: Pair, trace: _PairTrace, chosen: dict[Pair, int | None], evaluate: Callable[[dict[Pair, int | None]], bool]
) -> int | None:
    """Bisect for the smallest limit above the current one that passes; None when none up to the ceiling does."""
    low = trace.policy.limit_value  # known to fail
    # At a limit above everything one actor sent, no request of this pair is blocked
    # unless a burst caps the bucket below a same-instant spike.
    ceiling = max(trace.busiest_units + 1, low + 1)

    high = min(max(low * 2, low + 1), ceiling)
    while True:
        chosen[pair] = high
        if evaluate(chosen):
            break
        if high >= ceiling:
            return None
        low = high
        high = min(high * 2, ceiling)

    while high - low > 1:
        middle = (low + high) // 2
        chosen[pair] = middle
        if evaluate(chosen):
            high = middle
        else:
            low = middle
    chosen[pair] = high
    return high
