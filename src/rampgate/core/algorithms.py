"""The four counting algorithms as pure state transitions.

Every function takes the stored state (None for a fresh counter), the time
``now`` in seconds, the request's ``units`` and the policy's numbers, and
returns ``(allowed, remaining, reset_after, retry_after, next_unit_after,
state)``:

- ``remaining``: whole units left after this request;
- ``reset_after``: seconds until the counter is full again;
- ``retry_after``: 0.0 when allowed, otherwise seconds until this same request
  would pass if no other request came (not rounded here);
- ``next_unit_after``: seconds until one more unit is available, None when the
  counter is full;
- ``state``: what to store; a blocked request returns the state unchanged.

Callers check ``units <= capacity`` first, because a request larger than the
capacity can never pass. Stores pass a ``now`` that never goes backwards for a
key (the window functions clamp it against the state as well), and run one
transition at a time per key; the Redis Lua scripts and the PostgreSQL
function are line-by-line twins of these functions.

Times within ``EPSILON`` (1 µs) of each other count as equal, so float
rounding never blocks a request sent at exactly ``now + retry_after``. For
``token_bucket`` and ``gcra``, stores count ``now`` from an origin near the
present (the memory store uses its first clock reading): a float near 1.7e9 s
is rounded to 0.24 µs, and over a burst the roundings of the stored TAT add up
until ``remaining`` is off by one (a burst of 300 at one instant is enough).

``token_bucket`` and ``gcra`` keep one number, the theoretical arrival time
(TAT) of the bucket: the moment the bucket will be full again. A token bucket
of capacity C refilled at ``limit / window`` per second admits exactly what
GCRA with emission interval ``T = window / limit`` and tolerance ``(C - 1)·T``
admits, so both share :func:`consume_tat`.
"""

from __future__ import annotations

from collections.abc import Callable
from math import floor
from typing import Any

# Timestamps near 1.7e9 s carry about 0.24 µs of float precision, so
# comparisons allow 1 µs of rounding noise.
EPSILON = 1e-6

Outcome = tuple[bool, int, float, float, float | None, Any]


def consume_tat(
    tat: float | None, now: float, units: int, limit: int, window: float, capacity: int
) -> Outcome:
    """Token bucket and GCRA: admit ``units`` when the bucket holds them."""
    interval = window / limit
    span = capacity * interval
    # Work with the backlog (how far the TAT is ahead of now), a small number,
    # rather than with timestamps: near 1.7e9 s a timestamp carries only
    # 0.24 µs, and dividing that error by a short interval miscounts units.
    backlog = tat - now if tat is not None and tat > now else 0.0

    after = backlog + units * interval
    excess = after - span
    if excess <= EPSILON:
        remaining = floor((span - after + EPSILON) / interval)
        next_unit_after = after - span + (remaining + 1) * interval
        return True, remaining, after, 0.0, next_unit_after, now + after

    remaining = max(floor((span - backlog + EPSILON) / interval), 0)
    next_unit_after = backlog - span + (remaining + 1) * interval
    return False, remaining, backlog, excess, next_unit_after, tat


def consume_fixed_window(
    state: tuple[int, int] | None, now: float, units: int, limit: int, window: float, capacity: int
) -> Outcome:
    """At most ``limit`` units per window ``[k·w, (k+1)·w)`` aligned to the Unix epoch.

    ``state`` is ``(k, units counted in window k)``.
    """
    index = int(now // window)
    if state is not None and state[0] > index:
        # The clock of this key went backwards: keep counting in the newer window.
        index = state[0]
    count = state[1] if state is not None and state[0] == index else 0
    window_end = (index + 1) * window
    until_end = max(window_end - now, 0.0)

    if count + units <= limit:
        count += units
        return True, limit - count, until_end, 0.0, until_end, (index, count)

    reset_after = until_end if count else 0.0
    return False, max(limit - count, 0), reset_after, until_end, until_end, state


def consume_sliding_window(
    state: list[float] | None, now: float, units: int, limit: int, window: float, capacity: int
) -> Outcome:
    """At most ``limit`` units within any half-open interval of ``window`` seconds.

    ``state`` is a flat log ``[t0, u0, t1, u1, …]`` of admitted requests, oldest
    first. An entry admitted at ``t`` stops counting at ``t + window``.
    """
    log = state if state is not None else []
    if log and log[-2] > now:
        now = log[-2]

    # An entry stops counting at ``t + window``; near that moment the float
    # sum can miss it by a rounding error, so within EPSILON counts as reached.
    cutoff = now - window + EPSILON
    start = 0
    while start < len(log) and log[start] <= cutoff:
        start += 2
    if start:
        del log[:start]

    used = 0
    for position in range(1, len(log), 2):
        used += int(log[position])

    if used + units <= limit:
        log.append(now)
        log.append(units)
        remaining = limit - used - units
        reset_after = log[-2] + window - now
        next_unit_after: float | None = log[0] + window - now
        return True, remaining, reset_after, 0.0, next_unit_after, log

    # Walk the log from the oldest entry until enough units have expired.
    needed = used + units - limit
    freed = 0
    retry_after = window
    for position in range(0, len(log), 2):
        freed += int(log[position + 1])
        if freed >= needed:
            retry_after = log[position] + window - now
            break
    reset_after = log[-2] + window - now if log else 0.0
    next_unit_after = log[0] + window - now if log else None
    return False, max(limit - used, 0), reset_after, retry_after, next_unit_after, log


def expiry_of(algorithm: str, state: Any, window: float) -> float:
    """Return the time after which ``state`` is the same as a fresh counter."""
    if state is None:
        return 0.0
    if algorithm == "fixed_window":
        return float((state[0] + 1) * window)
    if algorithm == "sliding_window":
        return float(state[-2] + window) if state else 0.0
    return float(state)


ALGORITHM_FUNCTIONS: dict[str, Callable[..., Outcome]] = {
    "token_bucket": consume_tat,
    "gcra": consume_tat,
    "fixed_window": consume_fixed_window,
    "sliding_window": consume_sliding_window,
}
