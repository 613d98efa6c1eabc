"""Comparison 7: memory per tracked actor in the memory store, and what is left after eviction.

One ``Gate.decide`` per actor, each a new actor, on the seeded tier-B
``api_call`` policy (token bucket, 200 per 60 s) with the flag enabled at
100 % and no recorder, so only the counters stay in memory. ``tracemalloc``
starts before rampgate is imported, so the baseline is the whole Python heap
of the gate: modules, catalog and snapshot. Then the clock moves past every
window, ``MemoryCounterStore.evict_expired()`` runs, and the heap is measured
again. The resident set size (RSS, from psutil) is shown too; it does not
shrink back, because the allocator keeps freed memory for reuse.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from typing import Any

from bench.runner import add_table, add_target, new_result, size_of_run

NAME = "memory"
TITLE = "Memory per tracked actor, memory store"
ACTION = "api_call"
WINDOW_SECONDS = 60
TARGET_BYTES_PER_ACTOR = 300
TARGET_RESIDUE = 0.10
# Actors tracked, by size of run.
SIZES = {"tiny": 2_000, "quick": 100_000, "full": 1_000_000}


class ManualClock:
    """A clock that moves only when the comparison advances it, so no counter expires while actors are added."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _rss_bytes() -> int | None:
    try:
        import psutil
    except ModuleNotFoundError:
        return None
    return int(psutil.Process(os.getpid()).memory_info().rss)


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """Track many actors, measure, expire and evict them, measure again; return the result dict.

    ``tiny`` tracks 2,000 actors, for tests of the benchmark itself.
    """
    result = new_result(NAME, TITLE)
    actors = SIZES[size_of_run(quick, tiny)]

    tracemalloc.start()
    from rampgate.core.flags import ENFORCEMENT_FLAG
    from rampgate.gate import memory_gate

    clock = ManualClock()
    gate = memory_gate(clock=clock, watch=False, audit=False)
    try:
        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="bench")
        gate.refresh()
        decide = gate.decide
        store = gate.store

        # Warm up every cache on the path (plans, the store's first sweep),
        # then start from an empty store.
        for number in range(20_000):
            decide("user", f"warm-{number}", ACTION)
        clock.now += WINDOW_SECONDS + 1
        store.evict_expired()
        baseline = _traced()
        rss_baseline = _rss_bytes()

        for number in range(actors):
            decide("user", f"u-{number}", ACTION)
        tracked = len(store)
        loaded = _traced()
        rss_loaded = _rss_bytes()

        clock.now += WINDOW_SECONDS + 1
        evicted = store.evict_expired()
        remaining = len(store)
        after = _traced()
        rss_after = _rss_bytes()
    finally:
        gate.close()
        tracemalloc.stop()

    per_actor = (loaded - baseline) / tracked
    residue = (after - baseline) / baseline
    rows = [
        ["baseline: gate, catalog, warmed caches", _mib(baseline), _mib(rss_baseline), "0"],
        [f"{tracked:,} actors tracked", _mib(loaded), _mib(rss_loaded), f"{tracked:,}"],
        [f"after expiry and evict_expired() ({evicted:,} evicted)", _mib(after), _mib(rss_after), f"{remaining:,}"],
    ]
    add_table(result, f"{actors:,} actors", ["state", "traced Python heap", "RSS", "counters in store"], rows)
    add_table(
        result,
        "per actor",
        ["figure", "value"],
        [
            ["traced bytes per tracked actor", f"{per_actor:,.0f} B"],
            ["heap left after eviction, above the baseline", f"{after - baseline:+,} B ({residue:+.1%})"],
        ],
    )
    add_target(
        result,
        f"≤ {TARGET_BYTES_PER_ACTOR} bytes per tracked actor at {actors:,} actors",
        f"{per_actor:,.0f} B",
        per_actor <= TARGET_BYTES_PER_ACTOR,
    )
    add_target(
        result,
        f"heap after eviction within {TARGET_RESIDUE:.0%} of the baseline",
        f"{residue:+.1%}",
        abs(residue) <= TARGET_RESIDUE,
    )
    result["notes"].append(
        "An actor's counter is one entry in the store's table for its policy and actor type: the actor id as the "
        "key and a float, the token bucket's theoretical arrival time, as the value. The traced heap is the size "
        "of the live Python allocations that tracemalloc counts, read after gc.collect(). A sweep drops a table "
        "that it empties and rebuilds one that loses more keys than it keeps, which is why the heap returns to "
        "the baseline."
    )
    result["data"] = {
        "actors": actors,
        "tracked": tracked,
        "baseline_bytes": baseline,
        "loaded_bytes": loaded,
        "after_eviction_bytes": after,
        "bytes_per_actor": per_actor,
        "residue": residue,
        "rss": {"baseline": rss_baseline, "loaded": rss_loaded, "after": rss_after},
    }
    return result


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.1f} MiB"
