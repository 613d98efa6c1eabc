"""In-process counter store: exact across the threads and tasks of one process."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from rampgate.core.algorithms import consume_fixed_window, consume_sliding_window, consume_tat
from rampgate.core.algorithms import Outcome

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

# A sweep that evicts at least this many keys of one table, and more keys
# than that table keeps, rebuilds the table to give its memory back.
_SHRINK_MIN_EVICTED = 1024


def split_counter_key(key: str) -> tuple[str, str]:
    """Split a counter key into ``(table, key within the table)`` for :class:`MemoryCounterStore`.

    A key in the form of :func:`rampgate.stores.base.counter_key`,
    ``<algorithm>:<policy>:{<actor_type>:<actor_id>}``, is split after the
    first ``:`` that follows the first ``{``, and loses its closing ``}``:
    ``("<algorithm>:<policy>:{<actor_type>:", "<actor_id>")``. Any other key
    goes whole to the table named ``""``. Joining the parts back (table, key,
    then ``}`` unless the table is ``""``) gives the original key, so two
    keys never share a counter.
    """
    brace = key.find("{")
    if brace >= 0 and key.endswith("}"):
        colon = key.find(":", brace)
        if colon >= 0:
            return key[: colon + 1], key[colon + 1 : -1]
    return "", key


class MemoryCounterStore:
    """Counters in dicts, guarded by one lock, with eviction of expired keys.

    The counters live in one table (a dict) per policy and actor type, keyed
    by the actor id, as :func:`split_counter_key` splits a counter key.
    ``Gate.decide`` runs the token-bucket/GCRA transition on this state
    itself, under ``_lock``. It finds the table by the name that its plan
    computed once and the counter by the caller's actor id, so a decision
    neither builds a counter key nor hashes one, because a string caches
    its hash. A change to the state or to the sweep schedule here must be
    made there too. The unit tests compare that path with :meth:`consume`.

    Token-bucket and GCRA counters are stored as a bare float, their
    theoretical arrival time, which is also the moment they expire; that keeps
    a tracked actor at 110 to 130 bytes. The TAT is counted in seconds from the
    store's first reading of the clock, because a float near 1.7e9 s rounds
    every addition to 0.24 µs and those errors add up over a burst. Window
    counters store ``(state, expires_at)`` in clock time.

    The store's time never goes back: a clock reading earlier than one already
    seen counts as that latest time, so no algorithm sees time move backwards.
    Expired keys are swept once the number of calls since the last sweep
    reaches the number of keys that sweep kept (at least
    ``min_sweep_interval`` calls). A sweep then visits at most twice as many
    keys as calls were made since the last one, so it costs O(1) amortised
    per call, and a stream of one-off actors holds at most the live counters
    plus one sweep interval of new ones.

    NOTE: requests drive the sweeps, so a store that goes quiet after a burst
    keeps the expired counters until traffic resumes or
    :meth:`evict_expired` is called.
    """

    name = "memory"

    def __init__(self, clock: Clock | None = None, min_sweep_interval: int = 10_000) -> None:
        self._clock: Clock = clock or time.time
        # Table name -> {key within the table -> stored state}; a sweep drops emptied tables.
        self._tables: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._calls_since_sweep = 0
        self._min_sweep_interval = min_sweep_interval
        # Calls until the next sweep. Comparing the calls with the current
        # number of keys instead would never sweep again while each call adds
        # a key, which is what a stream of one-off actors does.
        self._sweep_after = min_sweep_interval
        self._now = float("-inf")  # the latest clock reading
        self._epoch: float | None = None  # origin of the stored TATs

    def __len__(self) -> int:
        """Return the number of counters held, expired ones included until a sweep drops them."""
        return sum(map(len, list(self._tables.values())))

    def consume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        name, inner_key = split_counter_key(key)
        with self._lock:
            now = float(self._clock())
            if now < self._now:
                now = self._now
            else:
                self._now = now
            table = self._tables.get(name)
            if table is None:
                table = self._tables[name] = {}

            if algorithm == "token_bucket" or algorithm == "gcra":
                epoch = self._epoch
                if epoch is None:
                    epoch = self._epoch = now
                outcome = consume_tat(table.get(inner_key), now - epoch, units, limit, window_seconds, capacity)
                if outcome[0]:
                    table[inner_key] = outcome[5]
            else:
                stored = table.get(inner_key)
                state = None if stored is None else stored[0]
                if algorithm == "fixed_window":
                    outcome = consume_fixed_window(state, now, units, limit, window_seconds, capacity)
                    if outcome[0]:
                        index = outcome[5][0]
                        table[inner_key] = (outcome[5], (index + 1) * window_seconds)
                else:
                    outcome = consume_sliding_window(state, now, units, limit, window_seconds, capacity)
                    log = outcome[5]
                    if log:
                        table[inner_key] = (log, log[-2] + window_seconds)
                    elif stored is not None:
                        del table[inner_key]

            self._calls_since_sweep += 1
            if self._calls_since_sweep >= self._sweep_after:
                self._sweep(now)

        return outcome[0], outcome[1], outcome[2], outcome[3], outcome[4], None

    async def aconsume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        return self.consume(key, algorithm, limit, window_seconds, capacity, units)

    def evict_expired(self) -> int:
        """Drop every counter that is as good as fresh; return how many were dropped."""
        with self._lock:
            return self._sweep(max(float(self._clock()), self._now))

    def _sweep(self, now: float) -> int:
        self._calls_since_sweep = 0
        tat_now = now - (self._epoch or 0.0)
        tables = self._tables
        evicted = 0
        kept = 0
        for name, table in list(tables.items()):
            expired = [
                key
                for key, value in table.items()
                if (value <= tat_now if value.__class__ is float else value[1] <= now)
            ]
            for key in expired:
                del table[key]
            evicted += len(expired)
            kept += len(table)

            # A dict keeps its table when keys are deleted, so after a burst of
            # actors has expired the table would stay sized for the burst.
            # Dropping an empty table, or copying the survivors, releases it;
            # the copy costs less than the deletions did.
            if not table:
                del tables[name]
            elif len(expired) >= _SHRINK_MIN_EVICTED and len(expired) > len(table):
                tables[name] = dict(table)

        self._sweep_after = max(self._min_sweep_interval, kept)
        if evicted:
            logger.debug("store.evicted", extra={"keys": evicted, "kept": kept, "tables": len(tables)})
        return evicted

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()

    def close(self) -> None:
        self.clear()

    async def aclose(self) -> None:
        self.clear()
