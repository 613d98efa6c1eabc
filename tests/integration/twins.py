"""Comparison of a store's algorithm transitions with their pure-Python twins at chosen times."""

from __future__ import annotations

import random
from typing import Any

import pytest

from rampgate.core.algorithms import ALGORITHM_FUNCTIONS

ALGORITHMS = ("token_bucket", "gcra", "fixed_window", "sliding_window")
# (limit, window_seconds, capacity): even and uneven emission intervals, and a burst.
POLICIES = ((5, 60, 5), (7, 60, 7), (7, 60, 12), (3, 1, 3), (100, 3600, 100))
START_US = 1_700_000_000_000_000


def policy_numbers(algorithm: str, policy: tuple[int, int, int]) -> tuple[int, int, int]:
    """Window algorithms count up to the limit, so their capacity is the limit."""
    limit, window, capacity = policy
    if algorithm in ("fixed_window", "sliding_window"):
        capacity = limit
    return limit, window, capacity


def replay_python_twin(
    algorithm: str, steps: list[tuple[int, int]], limit: int, window: int, capacity: int
) -> list[Any]:
    """Run the Python algorithm over ``steps`` of (now in µs, units), keeping state as the memory store does."""
    function = ALGORITHM_FUNCTIONS[algorithm]
    state: Any = None
    outcomes = []
    for now_us, units in steps:
        outcome = function(state, now_us / 1e6, units, limit, window, capacity)
        if algorithm == "sliding_window" or outcome[0]:
            state = outcome[5]
        outcomes.append(outcome[:5])
    return outcomes


def random_steps(rng: random.Random, capacity: int, window: int, count: int = 60) -> list[tuple[int, int]]:
    """Times on a millisecond grid, mostly forwards, sometimes backwards, with varied units."""
    gaps_ms = [0, 0, 1, 100, 1000, 5000, window * 1000 // 7, window * 1000, -500]
    now = START_US
    steps = []
    for _ in range(count):
        now += rng.choice(gaps_ms) * 1000
        steps.append((now, rng.randint(1, capacity)))
    return steps


def assert_same_outcomes(expected: list[Any], actual: list[Any]) -> None:
    """Same decisions and remaining units; durations equal up to the store's rounding to 1 µs."""
    for position, (python, store) in enumerate(zip(expected, actual)):
        context = f"step {position}: python {python}, store {store[:5]}"
        assert store[0] == python[0], context
        assert store[1] == python[1], context
        for index in (2, 3):
            assert store[index] == pytest.approx(python[index], abs=2e-6), context
        if python[4] is None:
            assert store[4] is None, context
        else:
            assert store[4] == pytest.approx(python[4], abs=2e-6), context
