"""Gate.decide's inlined fast path against the step-by-step DecisionEngine pipeline.

Two gates get the same catalog and the same clock. One decides through
``Gate.decide``, the other through ``Gate._decide_general`` only. Every
decision and every recorded audit entry must be identical over random
requests that reach every branch: cohorts, shadow on and off, actor
overrides, trust tiers, suspension, each algorithm, costs above capacity and
actions without a policy.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rampgate.catalog.audit import AUDIT_ROW_LENGTH, STAT_ROW_LENGTH, AuditWriter
from rampgate.core.bucketing import is_in_cohort
from rampgate.core.decision import Decision, round_up_ms
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.policies import Policy
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.errors import InvalidInput
from rampgate.catalog.database import MEMORY_URL
from rampgate.gate import AsyncGate, Gate, memory_gate
from rampgate.stores.base import counter_key
from rampgate.stores.memory import MemoryCounterStore

ACTORS = [("user", f"u-{n}") for n in range(40)] + [("ip", "10.0.0.1"), ("device", "d-1")]
ACTIONS = ("send_message", "media_upload", "api_call", "custom_sliding", "custom_fixed", "custom_gcra",
           "unflagged", "no_policy")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None:
        self.rows.append((fields_of(decision), units, now, request_id, context))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def fields_of(decision: Decision) -> dict[str, Any]:
    return {name: getattr(decision, name) for name in Decision.__slots__}


def rows_of(queue: Iterable[Any], length: int) -> list[tuple[Any, ...]]:
    """Cut an AuditWriter queue, whose rows lie flat one after the other, into rows."""
    values = list(queue)
    assert len(values) % length == 0, "the queue contains whole rows"
    return [tuple(values[start : start + length]) for start in range(0, len(values), length)]


def configure(gate: Gate | AsyncGate, percentage: int, shadow: bool) -> None:
    """Give ``gate`` a catalog that reaches every branch of the pipeline."""
    catalog = gate.catalog
    config = dict(catalog.get_flag(ENFORCEMENT_FLAG).config)
    config["actions"] = list(config["actions"]) + ["custom_sliding", "custom_fixed", "custom_gcra", "no_policy"]
    config["action_percentages"] = {"media_upload": min(100, percentage + 20)}
    config["shadow"] = shadow
    catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=percentage, config=config)

    catalog.set_policy(Policy(scope="tier", tier="B", action="custom_sliding", limit_value=4, window_seconds=10,
                              algorithm="sliding_window", cost_per_action=2))
    catalog.set_policy(Policy(scope="global", action="custom_fixed", limit_value=5, window_seconds=7,
                              algorithm="fixed_window", fail_mode="closed"))
    catalog.set_policy(Policy(scope="tier", tier="B", action="custom_gcra", limit_value=3, window_seconds=9,
                              algorithm="gcra", burst=2))
    catalog.set_policy(Policy(scope="global", action="unflagged", limit_value=6, window_seconds=5))
    catalog.set_policy(Policy(scope="actor", actor_type="user", actor_id="u-3", action="send_message",
                              limit_value=2, window_seconds=30))
    catalog.set_policy(Policy(scope="actor", actor_type="user", actor_id="u-4", action="custom_gcra",
                              limit_value=1, window_seconds=4, algorithm="token_bucket"))
    catalog.set_policy(Policy(scope="tier", tier="C", action="api_call", limit_value=3, window_seconds=60,
                              enabled=False))

    catalog.set_trust("user", "u-1", tier="A")
    catalog.set_trust("user", "u-2", tier="C")
    catalog.set_trust("user", "u-5", tier="D")
    catalog.set_trust("user", "u-6", tier="B", level="E5")
    catalog.set_trust("user", "u-3", tier="C")
    gate.refresh()


@pytest.mark.parametrize(("percentage", "shadow"), [(0, True), (37, True), (37, False), (100, True)])
def test_fast_path_matches_engine(percentage: int, shadow: bool) -> None:
    clock = Clock()
    fast_recorder, general_recorder = Recorder(), Recorder()
    fast = memory_gate(clock=clock, watch=False, recorder=fast_recorder)
    general = memory_gate(clock=clock, watch=False, recorder=general_recorder)
    configure(fast, percentage, shadow)
    configure(general, percentage, shadow)
    rng = random.Random(percentage * 2 + shadow)

    try:
        for step in range(3000):
            actor_type, actor_id = rng.choice(ACTORS)
            action = rng.choice(ACTIONS)
            cost = rng.choice((1, 1, 1, 2, 3, 7, 300))
            request_id = f"r-{step}" if step % 7 == 0 else None
            context = {"step": step} if step % 11 == 0 else None

            got = fast.decide(actor_type, actor_id, action, cost, request_id=request_id, context=context)
            want = general._decide_general(
                general.snapshot, actor_type, actor_id, action, cost, request_id, context
            )

            assert fields_of(got) == fields_of(want), (step, actor_type, actor_id, action, cost)
            clock.now += rng.choice((0.0, 0.0, 0.001, 0.25, 1.0, 3.5))
    finally:
        fast.close()
        general.close()

    assert fast_recorder.rows == general_recorder.rows


@pytest.mark.parametrize(("percentage", "max_buffer"), [(37, 100_000), (100, 100_000), (37, 40)])
def test_fast_path_queues_audit_rows_like_record(tmp_path: Path, percentage: int, max_buffer: int) -> None:
    """Gate.decide adds to an AuditWriter's queues the rows that AuditWriter.record adds.

    The writers are not started, so the queues keep every row; with
    ``max_buffer`` 40 both queues fill and the rest is dropped.
    """
    clock = Clock()
    fast = memory_gate(clock=clock, watch=False, audit=False)
    general = memory_gate(clock=clock, watch=False, audit=False)
    fast_writer = AuditWriter(fast.engine, max_buffer=max_buffer, spill_path=tmp_path / "fast")
    general_writer = AuditWriter(general.engine, max_buffer=max_buffer, spill_path=tmp_path / "general")
    fast.recorder = fast_writer
    general.recorder = general_writer
    configure(fast, percentage, shadow=True)
    configure(general, percentage, shadow=True)
    rng = random.Random(percentage + max_buffer)

    try:
        for step in range(2000):
            actor_type, actor_id = rng.choice(ACTORS)
            action = rng.choice(ACTIONS)
            cost = rng.choice((1, 1, 1, 2, 7, 300))
            request_id = f"r-{step}" if step % 7 == 0 else None
            context = {"step": step} if step % 11 == 0 else None

            fast.decide(actor_type, actor_id, action, cost, request_id=request_id, context=context)
            general._decide_general(general.snapshot, actor_type, actor_id, action, cost, request_id, context)
            clock.now += rng.choice((0.0, 0.001, 0.25, 1.0, 3.5))

        audits = rows_of(fast_writer._audits, AUDIT_ROW_LENGTH)
        stats = rows_of(fast_writer._stats, STAT_ROW_LENGTH)
        assert audits == rows_of(general_writer._audits, AUDIT_ROW_LENGTH)
        assert stats == rows_of(general_writer._stats, STAT_ROW_LENGTH)
        assert fast_writer.dropped == general_writer.dropped
        assert len(audits) > 0
        if percentage < 100:
            assert any(row[3] == "shadow" and row[6] for row in stats), "a shadow block is counted"
        if max_buffer < 100:
            assert fast_writer.dropped > 0
            assert len(audits) == max_buffer
    finally:
        fast.close()
        general.close()


@pytest.mark.parametrize(("percentage", "shadow"), [(37, True), (37, False), (100, True)])
async def test_async_fast_path_matches_engine(percentage: int, shadow: bool) -> None:
    clock = Clock()
    fast_recorder, general_recorder = Recorder(), Recorder()
    options: dict[str, Any] = {"database_url": MEMORY_URL, "counter_store": "memory", "clock": clock, "watch": False}
    fast = AsyncGate(recorder=fast_recorder, **options)
    general = AsyncGate(recorder=general_recorder, **options)
    configure(fast, percentage, shadow)
    configure(general, percentage, shadow)
    rng = random.Random(percentage * 3 + shadow)

    try:
        for step in range(1500):
            actor_type, actor_id = rng.choice(ACTORS)
            action = rng.choice(ACTIONS)
            cost = rng.choice((1, 1, 2, 7, 300))

            got = await fast.decide(actor_type, actor_id, action, cost)
            want = await general._decide_general(general.snapshot, actor_type, actor_id, action, cost, None, None)

            assert fields_of(got) == fields_of(want), (step, actor_type, actor_id, action, cost)
            clock.now += rng.choice((0.0, 0.001, 0.25, 1.0, 3.5))
    finally:
        await fast.aclose()
        await general.aclose()

    assert fast_recorder.rows == general_recorder.rows


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("robot", "u-1", "api_call", 1), "actor_type"),
        (("user", "", "api_call", 1), "actor_id"),
        (("user", "x" * 257, "api_call", 1), "actor_id"),
        (("user", 42, "api_call", 1), "actor_id"),
        (("user", "u-\x00", "api_call", 1), "actor_id"),
        (("user", "u-1", "Bad Action", 1), "action"),
        (("user", "u-1", "api_call", 0), "cost"),
        (("user", "u-1", "api_call", True), "cost"),
        (("robot", "u-1", "Bad Action", 0), "actor_type"),
    ],
)
def test_fast_path_rejects_like_engine(arguments: tuple[Any, ...], field: str) -> None:
    gate = memory_gate(watch=False, audit=False)
    try:
        gate.decide("user", "u-1", "api_call")  # warm the plan cache first
        with pytest.raises(InvalidInput) as raised:
            gate.decide(*arguments)
        assert raised.value.field == field
    finally:
        gate.close()


_TRANSITION_GATES: list[Gate] = []


def transition_gate() -> Gate:
    """One gate for every example of the property test below: opening a catalog costs far more than an example."""
    if not _TRANSITION_GATES:
        _TRANSITION_GATES.append(memory_gate(watch=False, audit=False))
    return _TRANSITION_GATES[0]


@pytest.fixture(scope="module", autouse=True)
def close_transition_gate() -> Iterator[None]:
    yield
    while _TRANSITION_GATES:
        _TRANSITION_GATES.pop().close()


@settings(max_examples=300, deadline=None)
@given(
    algorithm=st.sampled_from(("token_bucket", "gcra")),
    limit=st.integers(1, 1000),
    window_seconds=st.integers(1, 86_400),
    burst=st.none() | st.integers(1, 1000),
    steps=st.lists(st.tuples(st.floats(0, 120, allow_nan=False), st.integers(1, 50)), min_size=1, max_size=60),
)
def test_inline_transition_matches_consume(
    algorithm: str, limit: int, window_seconds: int, burst: int | None, steps: list[tuple[float, int]]
) -> None:
    """Gate.decide's token-bucket transition on the memory store equals MemoryCounterStore.consume exactly.

    Both stores see the same clock readings. The decision carries
    ``next_unit_after`` unrounded, and the stored TATs must be equal floats.
    """
    clock = Clock()
    policy = Policy(scope="global", action="probe", limit_value=limit, window_seconds=window_seconds,
                    algorithm=algorithm, burst=burst)
    gate = transition_gate()
    gate.watcher.snapshot = CatalogSnapshot(policies=[policy])
    gate.clock = clock
    fast = gate.store = MemoryCounterStore(clock=clock)
    general = MemoryCounterStore(clock=clock)
    key = counter_key(algorithm, policy.name, "user", "u-1")
    assert gate._memory_store is fast

    for advance, units in steps:
        clock.now += advance
        cost = min(units, policy.capacity)
        want = general.consume(key, algorithm, limit, window_seconds, policy.capacity, cost)
        got = gate.decide("user", "u-1", "probe", cost)

        assert got.allowed is want[0]
        assert got.remaining == want[1]
        assert got.reset_after == round_up_ms(want[2])
        assert got.retry_after == round_up_ms(want[3])
        assert got.next_unit_after == want[4]
        assert fast._tables == general._tables


def test_snapshot_cohort_matches_bucketing() -> None:
    gate = memory_gate(watch=False, audit=False)
    try:
        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=37)
        snapshot = gate.refresh()
        for number in range(2000):
            actor_id = f"u-{number}"
            assert snapshot.is_in_cohort("api_call", actor_id) == is_in_cohort(ENFORCEMENT_FLAG, actor_id, 37)
        assert snapshot.is_in_cohort("not_governed", "u-1") is True

        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=False)
        snapshot = gate.refresh()
        assert not any(snapshot.is_in_cohort("api_call", f"u-{number}") for number in range(200))
        with pytest.raises(InvalidInput):
            snapshot.is_in_cohort("Bad Action", "u-1")
    finally:
        gate.close()
