"""The interface every counter store offers."""

from __future__ import annotations

from typing import Protocol

from rampgate.core.algorithms import Outcome


class CounterStore(Protocol):
    """A store that runs one algorithm transition per call, atomically per key.

    ``consume`` takes its time from the store's own clock and returns the
    outcome tuple of :mod:`rampgate.core.algorithms`, with the state replaced
    by None. It raises :class:`rampgate.errors.StoreError` when the store fails.
    """

    name: str

    def consume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome: ...

    def close(self) -> None: ...


class AsyncCounterStore(Protocol):
    """The asyncio twin of :class:`CounterStore`."""

    name: str

    async def aconsume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome: ...

    async def aclose(self) -> None: ...


def counter_key(algorithm: str, policy_name: str, actor_type: str, actor_id: str) -> str:
    """Return the key of one actor's counter under one policy.

    The actor sits inside ``{…}``, a Redis Cluster hash tag, so every key of an
    actor lands on one slot. Changing a policy's algorithm starts a new counter
    because the stored state has another shape.
    """
    return f"{algorithm}:{policy_name}:{{{actor_type}:{actor_id}}}"
