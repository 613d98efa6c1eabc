"""Gate and AsyncGate: the decision pipeline wired to a counter store, the catalog and the audit trail."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from math import ceil, floor
from typing import Any, Callable

from rampgate.catalog.audit import AuditWriter, DecisionRecorder, NullRecorder
from rampgate.catalog.database import MEMORY_URL, check_schema, create_catalog_engine, current_revision, migrate
from rampgate.catalog.repository import Catalog
from rampgate.catalog.watcher import CatalogWatcher
from rampgate.core.bucketing import _hash
from rampgate.core.decision import ENFORCE, LIMITED, OK, SHADOW, Decision
from rampgate.core.names import ACTOR_TYPES, DEFAULT_LEVEL, DEFAULT_TIER, SUSPENDED_LEVEL
from rampgate.core.algorithms import EPSILON, Outcome
from rampgate.core.snapshot import CatalogSnapshot, DecisionPlan
from rampgate.engine import CounterRequest, DecisionEngine
from rampgate.errors import StoreError
from rampgate.settings import Settings, load_settings
from rampgate.stores.factory import open_counter_store
from rampgate.stores.memory import MemoryCounterStore

logger = logging.getLogger(__name__)

# How long :meth:`AsyncGate.warm` waits for the counter store by default.
STORE_WARM_UP_TIMEOUT_SECONDS = 5.0

Clock = Callable[[], float]

_ACTOR_TYPES = frozenset(ACTOR_TYPES)
_DEFAULT_TRUST = (DEFAULT_TIER, DEFAULT_LEVEL)
_new_decision = object.__new__


def _no_drop() -> None:
    return None


class _GateBase:
    def __init__(
        self,
        *,
        database_url: str | None = None,
        counter_store: str | None = None,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        store_timeout_ms: int | None = None,
        clock: Clock | None = None,
        settings: Settings | None = None,
        store: Any = None,
        recorder: DecisionRecorder | None = None,
        watch: bool = True,
        audit: bool = True,
    ) -> None:
        self.settings = settings or load_settings(
            database_url=database_url,
            counter_store=counter_store,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            store_timeout_ms=store_timeout_ms,
        )
        self.clock = clock or time.time

        # Catalog: the embedded SQLite database is created on first use.
        self.engine = create_catalog_engine(self.settings.database_url)
        if self.engine.dialect.name == "sqlite" and current_revision(self.engine) is None:
            migrate(self.engine)
        check_schema(self.engine)
        self.catalog = Catalog(self.engine)
        self.watcher = CatalogWatcher(self.catalog)
        if watch:
            self.watcher.start()

        self.store = store if store is not None else open_counter_store(self.settings, clock=self.clock)
        if recorder is not None:
            self.recorder = recorder
        elif audit:
            writer = AuditWriter(
                self.engine, max_buffer=self.settings.audit_buffer_rows, spill_path=self.settings.audit_spill_path
            )
            writer.start()
            self.recorder = writer
        else:
            self.recorder = NullRecorder()
        self._engine = DecisionEngine()

    @property
    def clock(self) -> Clock:
        """The clock of the audit timestamps, in seconds; a store that the gate opens reads it too."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self._link_memory_store()

    @property
    def store(self) -> Any:
        """The counter store; setting it also sets the memory store that ``Gate.decide`` counts on itself."""
        return self._store

    @store.setter
    def store(self, store: Any) -> None:
        self._store = store
        self._link_memory_store()

    def _link_memory_store(self) -> None:
        # Gate.decide runs the token-bucket transition on a memory store that
        # reads the gate's clock, and stamps the audit row with the store's
        # reading. Any other store, or a memory store on another clock, is
        # called through consume.
        store = getattr(self, "_store", None)
        if store.__class__ is MemoryCounterStore and store._clock is getattr(self, "_clock", None):
            self._memory_store: MemoryCounterStore | None = store
        else:
            self._memory_store = None

    @property
    def recorder(self) -> DecisionRecorder:
        """The destination of every decision; setting it also sets the queues that ``Gate.decide`` fills directly."""
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: DecisionRecorder) -> None:
        self._recorder = recorder
        # Gate.decide adds rows to an AuditWriter's queues itself, as
        # AuditWriter.record would, instead of calling record with the Decision.
        if recorder.__class__ is AuditWriter:
            writer = recorder
            self._audit_queue: deque[Any] | None = writer._audits
            self._stat_queue: deque[Any] | None = writer._stats
            self._audit_values_limit = writer._audit_values_limit
            self._stat_values_limit = writer._stat_values_limit
            self._audit_drop: Callable[[], None] = writer._drop
        else:
            self._audit_queue = self._stat_queue = None
            self._audit_values_limit = self._stat_values_limit = 0
            self._audit_drop = _no_drop

    @property
    def snapshot(self) -> CatalogSnapshot:
        """The catalog snapshot that the request path currently reads."""
        return self.watcher.snapshot

    def refresh(self) -> CatalogSnapshot:
        """Reload flags, policies and trust profiles now instead of waiting for the watcher."""
        return self.watcher.refresh()

    def _close_catalog(self) -> None:
        self.watcher.stop()
        self.recorder.close()
        self.engine.dispose()


class Gate(_GateBase):
    """Decides requests in the calling thread.

    With no arguments it uses the settings (``RAMPGATE_*`` or ``rampgate.toml``),
    which default to the SQLite catalog ``rampgate.db`` and in-memory counters.
    ``clock`` (a callable returning seconds) drives the memory store and the
    audit timestamps, for tests and simulation.
    """

    def decide(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        *,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide one request and record it; raise :class:`InvalidInput` on a bad argument.

        The common case runs inline here on the snapshot's cached
        :class:`DecisionPlan`: no actor override, not suspended, in the
        cohort or shadowed, and a policy that the request fits. On the
        memory store the token bucket runs here too, and rows for an
        :class:`AuditWriter` are queued here. Every other case takes
        :meth:`_decide_general`, the step-by-step pipeline of
        :class:`DecisionEngine`. Both give the same decision and audit rows,
        which differential tests check. The inlining exists because each
        Python call costs about 0.08 µs, 8 % of a decision (BENCHMARKS.md,
        comparison 1).
        """
        # Validate: the cheap checks here, the error messages in check_request.
        if (
            actor_type not in _ACTOR_TYPES
            or actor_id.__class__ is not str
            or not actor_id
            or len(actor_id) > 256
            or "\x00" in actor_id
            or cost.__class__ is not int
            or cost < 1
            or cost > 1_000_000
        ):
            self._engine.check_request(actor_type, actor_id, action, cost)
        snapshot = self.watcher.snapshot
        try:
            plans = snapshot.action_plans[action]
        except KeyError:
            self._engine.check_request(actor_type, actor_id, action, cost)
            plans = snapshot.plans_for(action)

        # Resolve the plan; overrides and suspensions are rare.
        if plans.overridden and (actor_type, actor_id) in plans.overridden:
            return self._decide_general(snapshot, actor_type, actor_id, action, cost, request_id, context)
        trust = snapshot.trust
        if trust:
            tier, level = trust.get((actor_type, actor_id), _DEFAULT_TRUST)
            if level == SUSPENDED_LEVEL:
                return self._decide_general(snapshot, actor_type, actor_id, action, cost, request_id, context)
            plan = plans.by_tier.get(tier) or plans.plan(tier)
        else:
            plan = plans.default

        # Cohort, then the cases that never touch a counter. A plan without a
        # policy has capacity 0, so it fails the capacity check too.
        percentage = plan.percentage
        if percentage >= 100:
            in_cohort = True
        elif percentage <= 0:
            in_cohort = False
        else:
            # rampgate.core.bucketing's test, bucket = hash % 100 + 1 <= percentage, in two steps less.
            in_cohort = _hash(plan.group_prefix + actor_id, 0, False) % 100 < percentage
        units = cost * plan.cost_per_action
        if units > plan.capacity or not (in_cohort or plan.shadow):
            return self._decide_general(snapshot, actor_type, actor_id, action, cost, request_id, context)

        # Count.
        store = self._memory_store
        tables = plan.memory_tables
        if store is not None and tables is not None:
            # The token-bucket/GCRA transition of the memory store, run here
            # on the store's state under its lock: the steps of
            # rampgate.core.algorithms.consume_tat, expression by expression,
            # so the floats are the same. See MemoryCounterStore for the
            # state; the unit tests compare this path with consume.
            interval = plan.interval
            span = plan.span
            lock = store._lock
            lock.acquire()
            try:
                now = store._clock()
                if now.__class__ is not float:
                    now = float(now)
                if now < store._now:
                    now = store._now
                else:
                    store._now = now
                epoch = store._epoch
                if epoch is None:
                    epoch = store._epoch = now
                try:
                    table = store._tables[tables[actor_type]]
                except KeyError:
                    table = store._tables[tables[actor_type]] = {}

                relative_now = now - epoch
                tat = table.get(actor_id)
                backlog = tat - relative_now if tat is not None and tat > relative_now else 0.0
                # 1 * interval is interval exactly, and skips a mixed int-float product.
                after = backlog + (interval if units == 1 else units * interval)
                raw_retry_after = after - span
                if raw_retry_after <= EPSILON:
                    table[actor_id] = relative_now + after
                    allowed = True
                    remaining = floor((span - after + EPSILON) / interval)
                    reset_after = after
                    next_unit_after = after - span + (remaining + 1) * interval
                else:
                    allowed = False
                    remaining = floor((span - backlog + EPSILON) / interval)
                    if remaining < 0:
                        remaining = 0
                    reset_after = backlog
                    next_unit_after = backlog - span + (remaining + 1) * interval

                calls = store._calls_since_sweep + 1
                store._calls_since_sweep = calls
                if calls >= store._sweep_after:
                    store._sweep(now)
            finally:
                lock.release()
        else:
            try:
                allowed, remaining, reset_after, raw_retry_after, next_unit_after = self._store.consume(
                    f"{plan.key_prefix}{actor_type}:{actor_id}}}", plan.algorithm, plan.limit,
                    plan.window_seconds, plan.capacity, units,
                )[:5]
            except StoreError:
                request = CounterRequest(
                    actor_type, actor_id, action, plan.tier, plan.policy,  # type: ignore[arg-type]
                    ENFORCE if in_cohort else SHADOW, in_cohort, units,
                )
                decision = DecisionEngine.fail(request)
                self._recorder.record(decision, units, self.clock(), request_id, context)
                return decision
            now = self.clock()

        # Build the decision as DecisionEngine.finish does. Setting the slots
        # on a bare instance skips binding 16 arguments to __init__, about
        # 110 ns of the decision. round_up_ms is inlined on both durations,
        # without its test for 0 where the request was allowed, because it
        # added units to the bucket and so reset_after is above 0.
        decision = _new_decision(Decision)
        decision.action = action
        decision.tier = tier = plan.tier
        decision.policy = policy_name = plan.policy_name
        decision.limit = plan.limit
        decision.window_seconds = plan.window_seconds
        decision.remaining = remaining
        decision.actor_type = actor_type
        decision.actor_id = actor_id
        decision.in_cohort = in_cohort
        decision.next_unit_after = next_unit_after
        if allowed:
            decision.allowed = True
            decision.would_block = would_block = False
            decision.reason = reason = OK
            decision.retry_after = retry_after = 0.0
            decision.reset_after = ceil(reset_after * 1000 - 1e-6) / 1000
        else:
            decision.allowed = allowed = not in_cohort
            decision.would_block = would_block = True
            decision.reason = reason = LIMITED
            retry_after = 0.0 if raw_retry_after <= 0 else ceil(raw_retry_after * 1000 - 1e-6) / 1000
            decision.retry_after = retry_after
            decision.reset_after = 0.0 if reset_after <= 0 else ceil(reset_after * 1000 - 1e-6) / 1000

        # Record: the rows of AuditWriter.record, added here without the call.
        if in_cohort:
            decision.mode = ENFORCE
            audit_queue = self._audit_queue
            if audit_queue is None:
                self._recorder.record(decision, units, now, request_id, context)
            elif len(audit_queue) < self._audit_values_limit:
                audit_queue.extend((
                    actor_type, actor_id, action, allowed, remaining, units, request_id, context, now,
                    tier, policy_name, reason, retry_after,
                ))
            else:
                self._audit_drop()
        else:
            decision.mode = SHADOW
            stat_queue = self._stat_queue
            if stat_queue is None:
                self._recorder.record(decision, units, now, request_id, context)
            elif len(stat_queue) < self._stat_values_limit:
                stat_queue.extend((now, action, tier, SHADOW, False, reason, would_block))
            else:
                self._audit_drop()
        return decision

    def _decide_general(
        self,
        snapshot: CatalogSnapshot,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int,
        request_id: str | None,
        context: dict[str, Any] | None,
    ) -> Decision:
        """Decide one request step by step through :class:`DecisionEngine`."""
        prepared = self._engine.prepare(snapshot, actor_type, actor_id, action, cost)
        if prepared.__class__ is CounterRequest:
            request: CounterRequest = prepared  # type: ignore[assignment]
            policy = request.policy
            try:
                outcome = self.store.consume(
                    request.key, policy.algorithm, policy.limit_value, policy.window_seconds,
                    policy.capacity, request.units,
                )
                decision = DecisionEngine.finish(request, outcome)
            except StoreError:
                decision = DecisionEngine.fail(request)
            units = request.units
        else:
            decision = prepared  # type: ignore[assignment]
            units = cost
        self.recorder.record(decision, units, self.clock(), request_id, context)
        return decision

    def close(self) -> None:
        """Flush the audit trail and release the stores."""
        self._close_catalog()
        self.store.close()

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncGate(_GateBase):
    """The asyncio twin of :class:`Gate`; use it as ``async with AsyncGate(...) as gate``."""

    async def decide(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int = 1,
        *,
        request_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Decision:
        """Decide one request and record it; raise :class:`InvalidInput` on a bad argument.

        The same two paths as :meth:`Gate.decide`: the snapshot's cached plan
        for the common case, :class:`DecisionEngine` for every other one.
        """
        snapshot = self.watcher.snapshot
        resolved = _resolve_plan(self._engine, snapshot, actor_type, actor_id, action, cost)
        if resolved is None:
            return await self._decide_general(snapshot, actor_type, actor_id, action, cost, request_id, context)
        plan, tier, in_cohort, units = resolved

        try:
            outcome = await self.store.aconsume(
                f"{plan.key_prefix}{actor_type}:{actor_id}}}", plan.algorithm, plan.limit, plan.window_seconds,
                plan.capacity, units,
            )
        except StoreError:
            request = CounterRequest(
                actor_type, actor_id, action, tier, plan.policy, ENFORCE if in_cohort else SHADOW, in_cohort, units  # type: ignore[arg-type]
            )
            decision = DecisionEngine.fail(request)
        else:
            decision = _finish_decision(plan, tier, in_cohort, actor_type, actor_id, outcome)

        self.recorder.record(decision, units, self.clock(), request_id, context)
        return decision

    async def _decide_general(
        self,
        snapshot: CatalogSnapshot,
        actor_type: str,
        actor_id: str,
        action: str,
        cost: int,
        request_id: str | None,
        context: dict[str, Any] | None,
    ) -> Decision:
        """Decide one request step by step through :class:`DecisionEngine`."""
        prepared = self._engine.prepare(snapshot, actor_type, actor_id, action, cost)
        if prepared.__class__ is CounterRequest:
            request: CounterRequest = prepared  # type: ignore[assignment]
            policy = request.policy
            try:
                outcome = await self.store.aconsume(
                    request.key, policy.algorithm, policy.limit_value, policy.window_seconds,
                    policy.capacity, request.units,
                )
                decision = DecisionEngine.finish(request, outcome)
            except StoreError:
                decision = DecisionEngine.fail(request)
            units = request.units
        else:
            decision = prepared  # type: ignore[assignment]
            units = cost
        self.recorder.record(decision, units, self.clock(), request_id, context)
        return decision

    async def aclose(self) -> None:
        """Flush the audit trail and release the stores."""
        self._close_catalog()
        await self.store.aclose()

    async def warm(self, timeout_seconds: float = STORE_WARM_UP_TIMEOUT_SECONDS) -> bool:
        """Open the counter store's connections on this event loop now; return False when that fails.

        The first decisions then wait for no connection. The PostgreSQL
        store's ``awarm`` also compiles its functions, and another store is
        pinged, which opens Redis's connection. A failure is logged and only
        delays the store's first decisions: they fail open until it responds.
        """
        store: Any = self.store
        warm = getattr(store, "awarm", None) or getattr(store, "aping", None)
        if warm is None:
            return True
        try:
            await asyncio.wait_for(warm(), timeout_seconds)
        except Exception as error:  # any failure of any store only delays its first decisions
            logger.warning(
                "gate.store_warm_up_failed",
                extra={"store": self.settings.counter_store, "error": f"{type(error).__name__}: {error}"},
            )
            return False
        return True

    async def __aenter__(self) -> "AsyncGate":
        await self.warm()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _resolve_plan(
    engine: DecisionEngine, snapshot: CatalogSnapshot, actor_type: str, actor_id: str, action: str, cost: int
) -> tuple[DecisionPlan, str, bool, int] | None:
    """Validate a request and resolve ``(plan, tier, in_cohort, units)``, or None for the general path.

    The steps of :meth:`Gate.decide` before the counter, as one function for
    :class:`AsyncGate`, whose store call costs far more than this call does.
    """
    if (
        actor_type not in _ACTOR_TYPES
        or actor_id.__class__ is not str
        or not 0 < len(actor_id) <= 256
        or "\x00" in actor_id
        or cost.__class__ is not int
        or not 0 < cost <= 1_000_000
    ):
        engine.check_request(actor_type, actor_id, action, cost)
    plans = snapshot.action_plans.get(action)
    if plans is None:
        engine.check_request(actor_type, actor_id, action, cost)
        plans = snapshot.plans_for(action)

    if plans.overridden and (actor_type, actor_id) in plans.overridden:
        return None
    trust = snapshot.trust
    if trust:
        tier, level = trust.get((actor_type, actor_id), _DEFAULT_TRUST)
        if level == SUSPENDED_LEVEL:
            return None
        plan = plans.by_tier.get(tier) or plans.plan(tier)
    else:
        tier = DEFAULT_TIER
        plan = plans.default

    percentage = plan.percentage
    if percentage >= 100:
        in_cohort = True
    elif percentage <= 0:
        in_cohort = False
    else:
        in_cohort = _hash(plan.group_prefix + actor_id, 0, False) % 100 + 1 <= percentage
    units = cost * plan.cost_per_action
    if plan.policy is None or not (in_cohort or plan.shadow) or units > plan.capacity:
        return None
    return plan, tier, in_cohort, units


def _finish_decision(
    plan: DecisionPlan, tier: str, in_cohort: bool, actor_type: str, actor_id: str, outcome: Outcome
) -> Decision:
    """Build the decision from a store's outcome, as :meth:`DecisionEngine.finish` does."""
    allowed, remaining, reset_after, retry_after, next_unit_after = outcome[:5]
    decision = _new_decision(Decision)
    decision.mode = ENFORCE if in_cohort else SHADOW
    decision.action = plan.action
    decision.tier = tier
    decision.policy = plan.policy_name
    decision.limit = plan.limit
    decision.window_seconds = plan.window_seconds
    decision.remaining = remaining
    decision.reset_after = 0.0 if reset_after <= 0 else ceil(reset_after * 1000 - 1e-6) / 1000
    decision.actor_type = actor_type
    decision.actor_id = actor_id
    decision.in_cohort = in_cohort
    decision.next_unit_after = next_unit_after
    if allowed:
        decision.allowed = True
        decision.would_block = False
        decision.reason = OK
        decision.retry_after = 0.0
    else:
        decision.allowed = not in_cohort
        decision.would_block = True
        decision.reason = LIMITED
        decision.retry_after = 0.0 if retry_after <= 0 else ceil(retry_after * 1000 - 1e-6) / 1000
    return decision


def memory_gate(clock: Clock | None = None, **kwargs: Any) -> Gate:
    """Open a gate on an in-memory catalog seeded with the defaults, for demos, tests and simulation."""
    return Gate(database_url=MEMORY_URL, counter_store="memory", clock=clock, **kwargs)
