"""Injected bots: the known abusers of a replay.

``--inject-bots N --bot-rate R`` adds N actors that each send R requests per
second from the first request of the trace to its last. Bot ``i`` sends at
``start + phase_i + k / R`` for k = 0, 1, 2, …, with its phase and its id drawn
from a generator seeded with ``--seed``, so the same seed gives the same bots
at the same times. Every bot requests ``GET /``, which the action map turns
into an action like any logged request.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from rampgate.errors import InvalidInput

BOT_METHOD = "GET"
BOT_PATH = "/"
MAX_BOTS = 100_000
MAX_BOT_RATE = 1_000.0


@dataclass(frozen=True, slots=True)
class BotSpec:
    """How many bots to inject and how fast each one sends, in requests per second."""

    count: int
    rate: float
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= MAX_BOTS:
            raise InvalidInput("--inject-bots", self.count, f"an integer from 1 to {MAX_BOTS}")
        if not isinstance(self.rate, (int, float)) or not 0 < self.rate <= MAX_BOT_RATE:
            raise InvalidInput("--bot-rate", self.rate, f"requests per second, more than 0 and at most {MAX_BOT_RATE:g}")


class BotSchedule:
    """The bots' requests in time order, produced lazily as the replay's clock moves.

    ``actor_ids`` lists the bots as ``ip`` actor ids (``bot-<8 hex digits>``).
    """

    __slots__ = ("_heap", "_interval", "_phases", "_start", "actor_ids")

    def __init__(self, spec: BotSpec, start: float) -> None:
        rng = random.Random(spec.seed)
        self._interval = 1.0 / spec.rate
        self._start = start
        ids: list[str] = []
        seen: set[str] = set()
        while len(ids) < spec.count:
            actor_id = f"bot-{rng.getrandbits(32):08x}"
            if actor_id not in seen:
                seen.add(actor_id)
                ids.append(actor_id)
        self.actor_ids: tuple[str, ...] = tuple(ids)
        self._phases = [rng.random() * self._interval for _ in ids]
        # (time of the next request, bot index, requests sent so far)
        self._heap = [(start + phase, index, 0) for index, phase in enumerate(self._phases)]
        heapq.heapify(self._heap)

    def next_time(self) -> float:
        """Time of the next bot request."""
        return self._heap[0][0]

    def pop(self) -> tuple[float, str]:
        """Take the next bot request: its time and the bot's actor id."""
        at, index, sent = self._heap[0]
        sent += 1
        # Computed from the start rather than by adding intervals, so float
        # error does not accumulate over millions of requests.
        heapq.heapreplace(self._heap, (self._start + self._phases[index] + sent * self._interval, index, sent))
        return at, self.actor_ids[index]
