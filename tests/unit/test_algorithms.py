"""The four algorithms through the memory store, against exact models and their definitions.

Time runs on a grid of 100 µs, so every boundary the algorithms compare
against is either met exactly or missed by far more than float rounding, and
the models below compute with exact fractions. A clock that steps back does
not move the store's time back: the time of a request is the latest time the
store has seen, so the definitions are checked on that time line.
"""

from __future__ import annotations

from fractions import Fraction
from math import floor

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rampgate.core.algorithms import consume_tat
from rampgate.core.decision import round_up_ms
from rampgate.core.policies import ALGORITHMS
from rampgate.stores.memory import MemoryCounterStore

TICKS_PER_SECOND = 10_000  # one tick is 100 µs
ROUNDING = Fraction(1, 10**6)  # the algorithms treat times within 1 µs as equal
KEY = "policy:{user:u-1}"


class GridClock:
    """A clock on the 100 µs grid; each reading is rounded once, so errors never add up."""

    def __init__(self, start_ticks: int) -> None:
        self.ticks = start_ticks
        self.latest_ticks = -1  # the latest reading: the store's time

    def __call__(self) -> float:
        self.latest_ticks = max(self.latest_ticks, self.ticks)
        return self.ticks / TICKS_PER_SECOND

    @property
    def exact(self) -> Fraction:
        return Fraction(self.ticks, TICKS_PER_SECOND)


# -- exact models ------------------------------------------------------------
#
# Each model returns (allowed, remaining, retry_after) for a request of
# ``units`` at exact time ``now`` (never earlier than the previous request).


class TokenBucketModel:
    """``capacity`` tokens refilled continuously at ``limit / window`` per second."""

    def __init__(self, limit: int, window: int, capacity: int) -> None:
        self.rate = Fraction(limit, window)
        self.capacity = capacity
        self.tokens = Fraction(capacity)
        self.last: Fraction | None = None

    def consume(self, now: Fraction, units: int) -> tuple[bool, int, Fraction]:
        if self.last is not None:
            self.tokens = min(Fraction(self.capacity), self.tokens + self.rate * (now - self.last))
        self.last = now
        if self.tokens >= units:
            self.tokens -= units
            return True, floor(self.tokens), Fraction(0)
        return False, floor(self.tokens), (units - self.tokens) / self.rate


class GcraModel:
    """Emission interval ``T = window / limit``, tolerance ``(capacity - 1)·T``."""

    def __init__(self, limit: int, window: int, capacity: int) -> None:
        self.interval = Fraction(window, limit)
        self.capacity = capacity
        self.tat: Fraction | None = None

    def consume(self, now: Fraction, units: int) -> tuple[bool, int, Fraction]:
        tat = now if self.tat is None else max(self.tat, now)
        span = self.capacity * self.interval
        new_tat = tat + units * self.interval
        if new_tat - now <= span:
            self.tat = new_tat
            return True, floor((span - (new_tat - now)) / self.interval), Fraction(0)
        return False, floor((span - (tat - now)) / self.interval), new_tat - now - span


class FixedWindowModel:
    """At most ``limit`` units in each window ``[k·w, (k+1)·w)``."""

    def __init__(self, limit: int, window: int, capacity: int) -> None:
        self.limit = limit
        self.window = window
        self.counts: dict[int, int] = {}

    def consume(self, now: Fraction, units: int) -> tuple[bool, int, Fraction]:
        index = floor(now / self.window)
        count = self.counts.get(index, 0)
        if count + units <= self.limit:
            self.counts[index] = count + units
            return True, self.limit - count - units, Fraction(0)
        return False, self.limit - count, (index + 1) * self.window - now


class SlidingWindowModel:
    """At most ``limit`` units within any half-open interval of ``window`` seconds."""

    def __init__(self, limit: int, window: int, capacity: int) -> None:
        self.limit = limit
        self.window = window
        self.admitted: list[tuple[Fraction, int]] = []

    def consume(self, now: Fraction, units: int) -> tuple[bool, int, Fraction]:
        counting = [(at, used) for at, used in self.admitted if at > now - self.window]
        used = sum(units for _, units in counting)
        if used + units <= self.limit:
            self.admitted.append((now, units))
            return True, self.limit - used - units, Fraction(0)

        needed = used + units - self.limit
        freed = 0
        for at, expired_units in counting:
            freed += expired_units
            if freed >= needed:
                return False, self.limit - used, at + self.window - now
        raise AssertionError("a request within the capacity always fits once the log has expired")


MODELS = {
    "token_bucket": TokenBucketModel,
    "gcra": GcraModel,
    "fixed_window": FixedWindowModel,
    "sliding_window": SlidingWindowModel,
}

# -- the definitions, checked on the admitted requests ------------------------


def check_definition(
    algorithm: str, admitted: list[tuple[Fraction, int]], limit: int, window: int, capacity: int
) -> None:
    """Fail when the admitted ``(time, units)`` exceed what the algorithm's definition allows."""
    if algorithm == "fixed_window":
        per_window: dict[int, int] = {}
        for at, units in admitted:
            index = floor(at / window)
            per_window[index] = per_window.get(index, 0) + units
        for index, total in per_window.items():
            assert total <= limit, f"window {index}: {total} units admitted, limit {limit}"
        return

    if algorithm == "sliding_window":
        # The fullest half-open interval [s, s + w) starts at an admitted request.
        for start, _ in admitted:
            total = sum(units for at, units in admitted if start <= at < start + window)
            assert total <= limit, f"[{start}, {start + window}): {total} units admitted, limit {limit}"
        return

    # token_bucket and gcra: in any closed interval [a, b], at most C + (b - a)·limit/window.
    rate = Fraction(limit, window)
    for first, (start, _) in enumerate(admitted):
        total = 0
        for end, units in admitted[first:]:
            total += units
            allowed = capacity + (end - start + ROUNDING) * rate
            assert total <= allowed, f"[{start}, {end}]: {total} units admitted, at most {allowed}"


# -- strategies ---------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn, algorithm: str) -> tuple[int, int, int]:
    limit = draw(st.integers(1, 12))
    window = draw(st.sampled_from([1, 2, 7, 60]) | st.integers(1, 120))
    capacity = limit
    if algorithm in ("token_bucket", "gcra"):
        capacity = draw(st.none() | st.integers(1, 16)) or limit
    return limit, window, capacity


def steps(window: int, capacity: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Requests as ``(clock step in ticks, units)``: zero steps, short and long ones, and steps back."""
    ticks = window * TICKS_PER_SECOND
    step = st.one_of(
        st.just(0),
        st.integers(1, 20),
        st.integers(1, ticks // 4 + 1),
        st.integers(1, 2 * ticks),
        st.integers(-ticks, -1),
    )
    return st.lists(st.tuples(step, st.integers(1, capacity)), min_size=1, max_size=60)


START_TICKS = st.sampled_from([1_700_000_000 * TICKS_PER_SECOND, 0, 12_345 * TICKS_PER_SECOND + 7])


@st.composite
def scenarios(draw: st.DrawFn, algorithm: str) -> tuple[int, int, int, int, list[tuple[int, int]]]:
    limit, window, capacity = draw(policies(algorithm))
    return limit, window, capacity, draw(START_TICKS), draw(steps(window, capacity))


def run(
    algorithm: str, limit: int, window: int, capacity: int, start: int, requests: list[tuple[int, int]]
) -> tuple[MemoryCounterStore, GridClock, list[tuple[Fraction, int]]]:
    """Send the requests through a memory store and compare every outcome with the exact model."""
    clock = GridClock(start)
    store = MemoryCounterStore(clock=clock)
    model = MODELS[algorithm](limit, window, capacity)
    store_time: Fraction | None = None
    admitted: list[tuple[Fraction, int]] = []

    for number, (step, units) in enumerate(requests):
        clock.ticks = max(clock.ticks + step, 0)
        store_time = clock.exact if store_time is None else max(store_time, clock.exact)
        allowed, remaining, _, retry_after, _, _ = store.consume(KEY, algorithm, limit, window, capacity, units)
        expected_allowed, expected_remaining, expected_retry = model.consume(store_time, units)

        where = f"request {number} at {store_time} s ({units} units)"
        assert allowed is expected_allowed, where
        assert remaining == expected_remaining, where
        assert retry_after == pytest.approx(float(expected_retry), abs=1e-6), where
        if allowed:
            admitted.append((store_time, units))
    return store, clock, admitted


# -- tests ----------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_algorithm_matches_exact_model(algorithm: str, data: st.DataObject) -> None:
    """Every outcome (allowed, remaining, retry_after) equals the exact model's, and the definition holds."""
    limit, window, capacity, start, requests = data.draw(scenarios(algorithm))

    _, _, admitted = run(algorithm, limit, window, capacity, start, requests)

    check_definition(algorithm, admitted, limit, window, capacity)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_retry_after_is_exact_to_the_millisecond(algorithm: str, data: st.DataObject) -> None:
    """Sent again at ``now + retry_after`` a blocked request passes; 1.1 ms earlier it does not."""
    limit, window, capacity, start, requests = data.draw(scenarios(algorithm))
    units = data.draw(st.integers(1, capacity))
    store, clock, _ = run(algorithm, limit, window, capacity, start, requests)

    # Repeat the request at the same moment until it is blocked.
    for _ in range(capacity + 1):
        outcome = store.consume(KEY, algorithm, limit, window, capacity, units)
        if not outcome[0]:
            break
    assert not outcome[0], "a full counter blocks"
    retry_after = round_up_ms(outcome[3])
    assert retry_after > 0
    assert retry_after * 1000 == pytest.approx(round(retry_after * 1000), abs=1e-9), "whole milliseconds"
    retry_ticks = round(retry_after * TICKS_PER_SECOND)
    blocked_at = clock.latest_ticks

    early_ticks = retry_ticks - 11  # 1.1 ms earlier
    if early_ticks > 0:
        clock.ticks = blocked_at + early_ticks
        early = store.consume(KEY, algorithm, limit, window, capacity, units)
        assert not early[0], f"allowed {early_ticks / 10} ms after the block, retry_after {retry_after} s"

    clock.ticks = blocked_at + retry_ticks
    retried = store.consume(KEY, algorithm, limit, window, capacity, units)
    assert retried[0], f"blocked at retry_after {retry_after} s, outcome {retried}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_burst_at_one_instant_counts_down(algorithm: str) -> None:
    """A burst at one instant sees remaining C-1, C-2, … 0, then a block, for large capacities too."""
    for limit, window in ((5, 60), (300, 60), (500, 60), (1000, 1), (7, 3)):
        clock = GridClock(1_700_000_000 * TICKS_PER_SECOND + 3)
        store = MemoryCounterStore(clock=clock)
        remaining = [store.consume(KEY, algorithm, limit, window, limit, 1)[1] for _ in range(limit)]
        assert remaining == list(range(limit - 1, -1, -1)), (limit, window)
        assert not store.consume(KEY, algorithm, limit, window, limit, 1)[0]


@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra"])
def test_burst_sizes_tat_algorithms(algorithm: str) -> None:
    """With burst 10 over 5 per 60 s: ten at once, then one every 12 s."""
    clock = GridClock(1_700_000_000 * TICKS_PER_SECOND)
    store = MemoryCounterStore(clock=clock)
    results = [store.consume(KEY, algorithm, 5, 60, 10, 1) for _ in range(11)]
    assert [r[0] for r in results] == [True] * 10 + [False]
    assert results[-1][3] == pytest.approx(12.0)

    clock.ticks += 12 * TICKS_PER_SECOND
    assert store.consume(KEY, algorithm, 5, 60, 10, 1)[0]
    assert not store.consume(KEY, algorithm, 5, 60, 10, 1)[0]


def test_tat_state_never_moves_back() -> None:
    """A request whose clock reads earlier than the stored TAT's origin leaves the state consistent."""
    outcome = consume_tat(1_000.0, 900.0, 1, 5, 60, 5)
    assert outcome[5] >= 1_000.0


@given(
    limit=st.integers(1, 12),
    window=st.integers(1, 120),
    start=START_TICKS,
    requests=st.lists(st.integers(1, 3), min_size=1, max_size=30),
)
def test_sliding_window_remaining_after_expiry(
    limit: int, window: int, start: int, requests: list[int]
) -> None:
    """Entries stop counting exactly ``window`` seconds after they were admitted."""
    assume(all(units <= limit for units in requests))
    clock = GridClock(start)
    store = MemoryCounterStore(clock=clock)
    for units in requests:
        store.consume(KEY, "sliding_window", limit, window, limit, units)
        clock.ticks += TICKS_PER_SECOND // 2
    clock.ticks += window * TICKS_PER_SECOND
    assert store.consume(KEY, "sliding_window", limit, window, limit, 1)[1] == limit - 1
