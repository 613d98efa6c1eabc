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
    database_url: str, store_settings: dict[str, Any], actor_ids: list[str], requests: int, start: Any
) -> list[tuple[str, bool, str]]:
    """Send ``requests`` concurrent decisions for every actor from one process; return (actor, allowed, mode)."""
    from rampgate import AsyncGate

    async def run() -> list[tuple[str, bool, str]]:
        gate = AsyncGate(database_url=database_url, watch=False, audit=False, **store_settings)
        try:
            start.wait()
            decisions = await asyncio.gather(
                *[gate.decide("user", actor_id, "media_upload") for actor_id in actor_ids for _ in range(requests)]
            )
        finally:
            await gate.aclose()
        return [(decision.actor_id, decision.allowed, decision.mode) for decision in decisions]

    return asyncio.run(run())
