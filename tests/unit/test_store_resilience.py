"""Backoff after store failures, rate-limited warnings and credential-free server names."""

from __future__ import annotations

import logging

import pytest

from rampgate.errors import StoreError
from rampgate.stores.resilience import CircuitBreaker, RateLimitedLog, describe_target


class Ticker:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_closed_lets_calls_through() -> None:
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", clock=Ticker())

    breaker.check()

    assert breaker.is_open is False


def test_breaker_fails_fast_for_growing_intervals() -> None:
    clock = Ticker()
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", initial_seconds=0.05, max_seconds=0.15, clock=clock)

    breaker.record_failure(ConnectionError("refused"))
    with pytest.raises(StoreError, match="127.0.0.1:6379"):
        breaker.check()
    clock.now += 0.05
    breaker.check()
    breaker.record_failure(ConnectionError("refused"))
    clock.now += 0.09
    with pytest.raises(StoreError):
        breaker.check()
    clock.now += 0.02
    breaker.check()
    breaker.record_failure(ConnectionError("refused"))
    clock.now += 0.149
    with pytest.raises(StoreError):
        breaker.check()
    clock.now += 0.002

    breaker.check()
    assert breaker.consecutive_failures == 3
    assert breaker.rejected == 3


def test_breaker_success_closes_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = Ticker()
    breaker = CircuitBreaker("PostgreSQL", "db:5432", clock=clock)
    breaker.record_failure(TimeoutError("timed out"))
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="rampgate.stores.resilience"):
        breaker.record_success()

    assert breaker.is_open is False
    assert breaker.consecutive_failures == 0
    assert [record.message for record in caplog.records] == ["store.recovered"]


def test_breaker_warning_names_target_and_hint(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker("Redis", "cache.internal:6380", clock=Ticker())

    with caplog.at_level(logging.WARNING, logger="rampgate.stores.resilience"):
        breaker.record_failure(ConnectionError("Error 111 connecting"))

    (record,) = caplog.records
    assert record.message == "store.degraded"
    assert record.target == "cache.internal:6380"  # type: ignore[attr-defined]
    assert "cache.internal:6380" in record.hint  # type: ignore[attr-defined]
    assert record.error == "ConnectionError: Error 111 connecting"  # type: ignore[attr-defined]


def test_rate_limited_log_counts_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    clock = Ticker()
    log = RateLimitedLog(logging.getLogger("rampgate.test"), interval_seconds=10, clock=clock)

    with caplog.at_level(logging.WARNING, logger="rampgate.test"):
        logged = [log.warning("store.degraded", store="Redis") for _ in range(5)]
        clock.now += 10
        logged.append(log.warning("store.degraded", store="Redis"))

    assert logged == [True, False, False, False, False, True]
    assert [record.suppressed for record in caplog.records] == [0, 4]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@cache:6379/0", "cache:6379"),
        ("postgresql://app:pa%40ss@db.internal:5433/rampgate", "db.internal:5433"),
        ("unix:///run/redis.sock", "/run/redis.sock"),
        ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
    ],
)
def test_describe_target_hides_credentials(url: str, expected: str) -> None:
    assert describe_target(url) == expected
