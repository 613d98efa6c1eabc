"""Functions that run in separate OS processes (multiprocessing with spawn) and hold their own Gates.

They live in a module of their own so that a spawned child imports only
rampgate and this file, not pytest and the test module.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


def watch_decisions(database_url: str, actor_id: str, changes: Any, stop: Any) -> None:
    """Decide for ``actor_id`` every 5 ms and report each change of (mode, limit, tier) with its time."""
    from rampgate import Gate

    gate = Gate(database_url=database_url, counter_store="memory", audit=False)
    try:
        last = None
        changes.put(("ready", time.time(), None))
        while not stop.is_set():
            decision = gate.decide("user", actor_id, "media_upload")
            seen = (decision.mode, decision.limit, decision.tier)
            if seen != last:
                changes.put(("change", time.time(), seen))
                last = seen
            time.sleep(0.005)
    finally:
        gate.close()


def fire_requests(
    database_url: str, store_settings: dict[str, Any], actor_ids: list[str], start_at: float
) -> list[tuple[str, bool, str]]:
    """Send one media_upload decision per item of ``actor_ids``, all concurrently at ``start_at`` (Unix time).

    Returns (actor_id, allowed, mode) for every decision.
    """
    from rampgate import AsyncGate

    async def run() -> list[tuple[str, bool, str]]:
        gate = AsyncGate(database_url=database_url, watch=False, audit=False, **store_settings)
        try:
            # Connect before the start so that every process fires at once.
            await gate.decide("user", "warm-up", "search")
            await asyncio.sleep(max(start_at - time.time(), 0))
            decisions = await asyncio.gather(
                *[gate.decide("user", actor_id, "media_upload") for actor_id in actor_ids]
            )
        finally:
            await gate.aclose()
        return [(decision.actor_id, decision.allowed, decision.mode) for decision in decisions]

    return asyncio.run(run())
