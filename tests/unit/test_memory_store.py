"""The memory counter store: eviction of expired counters and exactness under concurrency."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier
from typing import Any

import pytest

from rampgate.core.policies import ALGORITHMS
from rampgate.stores.memory import MemoryCounterStore

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
