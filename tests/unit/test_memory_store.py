"""The memory counter store: eviction of expired counters and exactness under concurrency."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import pytest

from rampgate.core.policies import ALGORITHMS, Policy
from rampgate.gate import memory_gate
from rampgate.stores.base import counter_key
from rampgate.stores.memory import MemoryCounterStore, split_counter_key

BASELINE_ACTORS = 20
ONE_OFF_ACTORS = 200_000


def consume(store: MemoryCounterStore, algorithm: str, actor: str) -> Any:
    """One request of one unit under a policy of 5 per 60 s, as tier B media_upload."""
    return store.consume(f"{algorithm}:tier:B:media_upload:{{user:{actor}}}", algorithm, 5, 60, 5, 1)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_one_off_actors_evicted(clock: Any, algorithm: str) -> None:
    """200,000 actors seen once are dropped after their counters expire; the baseline stays."""
    store = MemoryCounterStore(clock=clock)

    def baseline_traffic(requests: int) -> None:
        for number in range(requests):
            consume(store, algorithm, f"regular-{number % BASELINE_ACTORS}")
            clock.advance(0.001)

    baseline_traffic(1_000)
    baseline = len(store)
    assert baseline == BASELINE_ACTORS

    # 200,000 one-off actors over 200 s, with the baseline still sending.
    largest = 0
    for number in range(ONE_OFF_ACTORS):
        consume(store, algorithm, f"once-{number}")
        clock.advance(0.001)
        if number % 1_000 == 0:
            consume(store, algorithm, f"regular-{number // 1_000 % BASELINE_ACTORS}")
            largest = max(largest, len(store))
    # A counter lives at most 60 s, so about 60,000 one-off counters are live,
    # and the next sweep comes after as many calls as the last sweep kept keys.
    assert largest <= 2 * (60_000 + BASELINE_ACTORS) + 10

    # The one-off counters expire; the baseline keeps going.
    clock.advance(120)
    baseline_traffic(max(len(store), 10_000) + 1)

    assert len(store) <= baseline + 1


def test_evict_expired_drops_only_expired(clock: Any) -> None:
    store = MemoryCounterStore(clock=clock)
    for algorithm in ALGORITHMS:
        for number in range(1_000):
            consume(store, algorithm, f"old-{number}")
    clock.advance(61)
    for algorithm in ALGORITHMS:
        consume(store, algorithm, "fresh")

    evicted = store.evict_expired()

    assert evicted == 4 * 1_000
    assert len(store) == 4
    # An evicted counter is as good as fresh: the next request sees a full counter.
    assert consume(store, "token_bucket", "old-1")[1] == 4


def test_evicted_counter_not_resurrected(clock: Any) -> None:
    """A counter that is still running is kept by every sweep."""
    store = MemoryCounterStore(clock=clock, min_sweep_interval=1)
    for _ in range(5):
        consume(store, "sliding_window", "busy")
    clock.advance(30)
    for number in range(100):
        consume(store, "sliding_window", f"other-{number}")

    assert not consume(store, "sliding_window", "busy")[0]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_threads_admit_exactly_limit(clock: Any, algorithm: str) -> None:
    store = MemoryCounterStore(clock=clock)
    barrier = Barrier(50)

    def request(_: int) -> bool:
        barrier.wait()
        return bool(consume(store, algorithm, "u-race")[0])

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(request, range(200)))

    assert results.count(True) == 5


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_tasks_admit_exactly_limit(clock: Any, algorithm: str) -> None:
    store = MemoryCounterStore(clock=clock)
    key = f"{algorithm}:tier:B:media_upload:{{user:u-race}}"

    outcomes = await asyncio.gather(*(store.aconsume(key, algorithm, 5, 60, 5, 1) for _ in range(200)))

    assert sum(1 for outcome in outcomes if outcome[0]) == 5


@pytest.mark.parametrize(
    ("key", "table", "inner_key"),
    [
        ("token_bucket:tier:B:api_call:{user:u-1}", "token_bucket:tier:B:api_call:{user:", "u-1"),
        ("gcra:global:*:login:{ip:10.0.0.1}", "gcra:global:*:login:{ip:", "10.0.0.1"),
        ("token_bucket:tier:B:api_call:{user:a:{b}:c}", "token_bucket:tier:B:api_call:{user:", "a:{b}:c"),
        ("token_bucket:tier:B:api_call:{user:}", "token_bucket:tier:B:api_call:{user:", ""),
        ("token_bucket:actor:user/x{y:z:send:{user:x{y:z}", "token_bucket:actor:user/x{y:", "z:send:{user:x{y:z"),
        ("k", "", "k"),
        ("a{b}", "", "a{b}"),
        ("a{b:c", "", "a{b:c"),
    ],
)
def test_split_counter_key(key: str, table: str, inner_key: str) -> None:
    assert split_counter_key(key) == (table, inner_key)
    rejoined = table + inner_key + "}" if table else inner_key
    assert rejoined == key


def test_gate_and_consume_share_counter(clock: Any) -> None:
    """Gate.decide's transition and consume with the counter key reach one counter."""
    gate = memory_gate(clock=clock, watch=False, audit=False)
    try:
        gate.catalog.set_policy(Policy(scope="global", action="probe", limit_value=5, window_seconds=60))
        policy = gate.refresh().policies.resolve("probe", "B", "user", "u-1")
        assert policy is not None
        store = gate.store
        assert gate._memory_store is store
        key = counter_key(policy.algorithm, policy.name, "user", "u-1")

        for _ in range(2):
            assert store.consume(key, policy.algorithm, 5, 60, 5, 1)[0]
            assert gate.decide("user", "u-1", "probe").allowed
        assert store.consume(key, policy.algorithm, 5, 60, 5, 1)[1] == 0
        assert not gate.decide("user", "u-1", "probe").allowed
        assert not store.consume(key, policy.algorithm, 5, 60, 5, 1)[0]

        assert len(store) == 1
    finally:
        gate.close()


def test_sweep_covers_every_table(clock: Any) -> None:
    """A sweep evicts across tables, drops the tables it empties and keeps live counters."""
    store = MemoryCounterStore(clock=clock)
    for algorithm in ALGORITHMS:
        for actor_type in ("user", "ip"):
            for number in range(50):
                store.consume(f"{algorithm}:tier:B:media_upload:{{{actor_type}:old-{number}}}", algorithm, 5, 60, 5, 1)
    store.consume("k", "fixed_window", 5, 60, 5, 1)
    assert len(store) == len(ALGORITHMS) * 2 * 50 + 1
    assert len(store._tables) == len(ALGORITHMS) * 2 + 1

    clock.advance(61)
    consume(store, "token_bucket", "fresh")

    assert store.evict_expired() == len(ALGORITHMS) * 2 * 50 + 1
    assert len(store) == 1
    assert list(store._tables) == ["token_bucket:tier:B:media_upload:{user:"]
    assert consume(store, "token_bucket", "fresh")[1] == 3


def test_sweep_shrinks_table_after_burst(clock: Any) -> None:
    """A table that loses most of its keys to a sweep is rebuilt, and its survivors keep their counters."""
    store = MemoryCounterStore(clock=clock)
    table = "token_bucket:tier:B:media_upload:{user:"
    for number in range(5_000):
        consume(store, "token_bucket", f"burst-{number}")
    # Each counter contains one unit of 12 s, so the burst expires 12 s later and the survivor 22 s later.
    clock.advance(10)
    consume(store, "token_bucket", "survivor")
    before = store._tables[table]
    clock.advance(3)

    assert store.evict_expired() == 5_000

    assert store._tables[table] is not before
    assert list(store._tables[table]) == ["survivor"]
    assert consume(store, "token_bucket", "survivor")[1] == 3


def test_clear_empties_every_table(clock: Any) -> None:
    store = MemoryCounterStore(clock=clock)
    for algorithm in ALGORITHMS:
        consume(store, algorithm, "u-1")
    store.consume("k", "token_bucket", 5, 60, 5, 1)

    store.clear()

    assert len(store) == 0
    assert consume(store, "token_bucket", "u-1")[1] == 4


@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra"])
def test_threads_gate_and_consume_admit_limit(clock: Any, algorithm: str) -> None:
    """Threads that reach one counter through Gate.decide and through consume admit exactly the limit.

    NOTE: on CPython 3.11 a thread switch between a transition's read and
    write of the counter is rare, and this test also passed with the lock
    taken out of Gate.decide. It checks that the two paths agree under
    concurrency, not that the lock is needed.
    """
    gate = memory_gate(clock=clock, watch=False, audit=False)
    switch_interval = sys.getswitchinterval()
    try:
        gate.catalog.set_policy(Policy(scope="global", action="probe", limit_value=5, window_seconds=60,
                                       algorithm=algorithm))
        gate.refresh()
        store = gate.store
        assert gate._memory_store is store
        # A sweep on every call, and a thread switch every microsecond, so
        # the threads interleave inside the transitions.
        store._min_sweep_interval = store._sweep_after = 1
        sys.setswitchinterval(1e-6)
        key = counter_key(algorithm, "global:*:probe", "user", "u-race")
        barrier = Barrier(50)

        def request(number: int) -> bool:
            barrier.wait()
            if number % 2:
                return gate.decide("user", "u-race", "probe").allowed
            return bool(store.consume(key, algorithm, 5, 60, 5, 1)[0])

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(request, range(2_000)))

        assert results.count(True) == 5
    finally:
        sys.setswitchinterval(switch_interval)
        gate.close()
