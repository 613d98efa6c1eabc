"""The circuit breaker's rule, reply deadlines, rate-limited warnings and credential-free server names."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from rampgate.errors import StoreError, StoreTimeout
from rampgate.stores.resilience import (
    CircuitBreaker,
    RateLimitedLog,
    SentRequest,
    await_reply,
    describe_target,
    has_unread_data,
)

BUDGET_SECONDS = 0.05


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
    breaker.record_failure(ConnectionRefusedError("connection refused"))
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


def test_breaker_error_opens_at_once() -> None:
    breaker = CircuitBreaker("PostgreSQL", "db:5432", clock=Ticker())

    breaker.record_failure(StoreError("connection refused"))

    assert breaker.is_open is True
    with pytest.raises(StoreError, match="fail fast"):
        breaker.check()


@pytest.mark.parametrize("timeout", [StoreTimeout("no answer within 50 ms"), TimeoutError("timed out")])
def test_breaker_one_timeout_stays_closed(timeout: Exception, caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker("PostgreSQL", "db:5432", clock=Ticker())

    with caplog.at_level(logging.WARNING, logger="rampgate.stores.resilience"):
        breaker.record_failure(timeout)
    breaker.check()

    assert breaker.is_open is False
    assert breaker.consecutive_failures == 1
    (record,) = caplog.records
    assert record.message == "store.timed_out"
    assert record.timeouts_in_a_row == 1  # type: ignore[attr-defined]
    assert record.opens_after == 3  # type: ignore[attr-defined]


def test_breaker_opens_after_threshold_timeouts() -> None:
    clock = Ticker()
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", timeout_threshold=3, clock=clock)

    breaker.record_failure(StoreTimeout("no answer"))
    breaker.record_failure(StoreTimeout("no answer"))
    assert breaker.is_open is False
    breaker.record_failure(StoreTimeout("no answer"))

    assert breaker.is_open is True
    with pytest.raises(StoreError):
        breaker.check()
    clock.now += 0.05
    breaker.check()


def test_breaker_success_resets_timeout_count() -> None:
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", timeout_threshold=3, clock=Ticker())

    for _ in range(5):
        breaker.record_failure(StoreTimeout("no answer"))
        breaker.record_failure(StoreTimeout("no answer"))
        breaker.record_success()

    assert breaker.is_open is False
    assert breaker.consecutive_failures == 0
    assert breaker.failures == 10


def test_breaker_error_after_timeouts_opens() -> None:
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", timeout_threshold=3, clock=Ticker())

    breaker.record_failure(StoreTimeout("no answer"))
    breaker.record_failure(ConnectionResetError("reset by peer"))

    assert breaker.is_open is True


def test_breaker_half_open_timeout_reopens_for_longer() -> None:
    clock = Ticker()
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", initial_seconds=0.05, timeout_threshold=3, clock=clock)
    for _ in range(3):
        breaker.record_failure(StoreTimeout("no answer"))
    clock.now += 0.05

    breaker.check()
    breaker.record_failure(StoreTimeout("no answer"))

    assert breaker.is_open is True
    clock.now += 0.09
    with pytest.raises(StoreError):
        breaker.check()
    clock.now += 0.02
    breaker.check()


def test_breaker_in_flight_failures_keep_interval() -> None:
    clock = Ticker()
    breaker = CircuitBreaker("Redis", "127.0.0.1:6379", initial_seconds=0.05, clock=clock)
    breaker.record_failure(ConnectionResetError("reset by peer"))

    # Calls sent before the breaker opened fail afterwards, all at once.
    for _ in range(300):
        breaker.record_failure(StoreTimeout("no answer"))
    clock.now += 0.05

    breaker.check()
    assert breaker.consecutive_failures == 301


def test_breaker_timeout_warnings_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    breaker = CircuitBreaker("PostgreSQL", "db:5432", clock=Ticker())

    with caplog.at_level(logging.WARNING, logger="rampgate.stores.resilience"):
        for _ in range(50):
            breaker.record_failure(StoreTimeout("no answer"))
            breaker.record_success()

    assert [record.message for record in caplog.records] == ["store.timed_out"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_threshold": 0}, "timeout_threshold 0"),
        ({"initial_seconds": 0.0}, "initial_seconds"),
        ({"initial_seconds": 3.0, "max_seconds": 2.0}, "max_seconds"),
    ],
)
def test_breaker_rejects_invalid_settings(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CircuitBreaker("Redis", "127.0.0.1:6379", **options)


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


# -- await_reply ----------------------------------------------------------------

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: the client end for the call under test and the server end that answers it."""
    client, server = socket.socketpair()
    client.setblocking(False)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def run_on(loop_name: str, scenario: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(scenario)


async def receive_reply(client: socket.socket, request: SentRequest) -> bytes:
    request.mark_sent(client.fileno())
    return await asyncio.get_running_loop().sock_recv(client, 16)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_await_reply_returns_answer(loop_name: str, socket_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = socket_pair

    async def scenario() -> bytes:
        request = SentRequest()
        task = asyncio.create_task(receive_reply(client, request))
        asyncio.get_running_loop().call_later(0.001, server.sendall, b"rows")
        return await await_reply(task, request, BUDGET_SECONDS)

    assert run_on(loop_name, scenario()) == b"rows"


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_await_reply_silent_server_times_out(loop_name: str, socket_pair: tuple[socket.socket, socket.socket]) -> None:
    client, _ = socket_pair

    async def scenario() -> asyncio.Task[bytes]:
        request = SentRequest()
        task = asyncio.create_task(receive_reply(client, request))
        with pytest.raises(TimeoutError, match="50 ms"):
            await await_reply(task, request, BUDGET_SECONDS)
        await asyncio.sleep(0)
        return task

    task = run_on(loop_name, scenario())

    assert task.cancelled()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_await_reply_forgives_loop_stall(loop_name: str, socket_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = socket_pair

    def answer_then_stall() -> None:
        # The answer arrives in time, then the event loop is busy past the deadline.
        server.sendall(b"rows")
        time.sleep(BUDGET_SECONDS * 4)

    async def scenario() -> bytes:
        request = SentRequest()
        task = asyncio.create_task(receive_reply(client, request))
        asyncio.get_running_loop().call_later(0.005, answer_then_stall)
        return await await_reply(task, request, BUDGET_SECONDS)

    assert run_on(loop_name, scenario()) == b"rows"


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_await_reply_counts_from_send(loop_name: str, socket_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = socket_pair

    async def wait_then_receive(request: SentRequest) -> bytes:
        # Waiting for a pooled connection is bounded by the pool, not by this budget.
        await asyncio.sleep(BUDGET_SECONDS * 3)
        asyncio.get_running_loop().call_later(0.001, server.sendall, b"rows")
        return await receive_reply(client, request)

    async def scenario() -> bytes:
        request = SentRequest()
        task = asyncio.create_task(wait_then_receive(request))
        return await await_reply(task, request, BUDGET_SECONDS)

    assert run_on(loop_name, scenario()) == b"rows"


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_await_reply_cancelled_caller_cancels_call(
    loop_name: str, socket_pair: tuple[socket.socket, socket.socket]
) -> None:
    client, _ = socket_pair

    async def scenario() -> asyncio.Task[bytes]:
        request = SentRequest()
        task = asyncio.create_task(receive_reply(client, request))
        waiter = asyncio.create_task(await_reply(task, request, 10.0))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0)
        return task

    task = run_on(loop_name, scenario())

    assert task.cancelled()


def test_has_unread_data_sees_data_and_end_of_file(socket_pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = socket_pair

    empty = has_unread_data(client.fileno())
    server.sendall(b"x")
    with_data = has_unread_data(client.fileno())
    client.recv(1)
    server.close()
    at_end = has_unread_data(client.fileno())

    assert empty is False
    assert with_data is True
    assert at_end is True
