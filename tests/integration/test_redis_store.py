"""The Redis counter store against a real Redis: twins of the Python algorithms, expiry, scripts, coalescing."""

from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from twins import (
    ALGORITHMS,
    POLICIES,
    START_US,
    assert_same_outcomes,
    policy_numbers,
    random_steps,
    replay_python_twin,
)

from rampgate.core.algorithms import ALGORITHM_FUNCTIONS
from rampgate.errors import StoreError
from rampgate.stores.base import counter_key
from rampgate.stores.redis import RedisCounterStore, parse_cluster_url

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("RAMPGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def store(redis_prefix: str):  # type: ignore[no-untyped-def]
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_ms=1000)
    yield store
    store.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("policy", POLICIES)
def test_redis_script_matches_python_twin(store: RedisCounterStore, algorithm: str, policy: tuple[int, int, int]) -> None:
    limit, window, capacity = policy_numbers(algorithm, policy)
    rng = random.Random(f"{algorithm}{policy}")
    steps = random_steps(rng, capacity, window)
    key = counter_key(algorithm, "tier:B:twin", "user", f"twin-{limit}-{window}-{capacity}")

    expected = replay_python_twin(algorithm, steps, limit, window, capacity)
    actual = [store.consume_at(now_us, key, algorithm, limit, window, capacity, units) for now_us, units in steps]

    assert_same_outcomes(expected, actual)
    assert any(outcome[0] for outcome in actual)
    assert not all(outcome[0] for outcome in actual)


def test_redis_sixth_upload_waits_twelve_seconds(store: RedisCounterStore) -> None:
    key = counter_key("token_bucket", "tier:B:media_upload", "user", "u-42")

    outcomes = [store.consume(key, "token_bucket", 5, 60, 5, 1) for _ in range(6)]

    assert [outcome[0] for outcome in outcomes] == [True] * 5 + [False]
    assert [outcome[1] for outcome in outcomes[:5]] == [4, 3, 2, 1, 0]
    assert 11.9 < outcomes[5][3] <= 12.0


def test_redis_retry_after_is_exact(store: RedisCounterStore) -> None:
    key = counter_key("gcra", "tier:B:exact", "user", "u-1")
    for _ in range(3):
        store.consume_at(START_US, key, "gcra", 3, 60, 3, 1)

    blocked = store.consume_at(START_US, key, "gcra", 3, 60, 3, 1)
    retry_us = round(blocked[3] * 1e6)
    too_early = store.consume_at(START_US + retry_us - 1000, key, "gcra", 3, 60, 3, 1)
    on_time = store.consume_at(START_US + retry_us, key, "gcra", 3, 60, 3, 1)

    assert blocked[0] is False
    assert retry_us == 20_000_000
    assert too_early[0] is False
    assert on_time[0] is True


@pytest.mark.parametrize(
    ("algorithm", "expected_ttl_ms"),
    [("token_bucket", 12_000), ("gcra", 12_000), ("sliding_window", 60_000)],
)
def test_redis_key_expires_when_counter_is_fresh(
    store: RedisCounterStore, redis_prefix: str, algorithm: str, expected_ttl_ms: int
) -> None:
    key = counter_key(algorithm, "tier:B:ttl", "user", "u-ttl")

    store.consume(key, algorithm, 5, 60, 5, 1)

    client = redis.Redis.from_url(REDIS_URL)
    try:
        ttl = client.pttl(redis_prefix + key)
    finally:
        client.close()
    assert expected_ttl_ms - 1000 < ttl <= expected_ttl_ms


def test_redis_fixed_window_key_expires_at_window_end(store: RedisCounterStore, redis_prefix: str) -> None:
    key = counter_key("fixed_window", "tier:B:ttl", "user", "u-fixed")

    outcome = store.consume(key, "fixed_window", 5, 60, 5, 1)

    client = redis.Redis.from_url(REDIS_URL)
    try:
        ttl = client.pttl(redis_prefix + key)
    finally:
        client.close()
    assert abs(ttl - outcome[2] * 1000) <= 50


def test_redis_keys_stay_under_prefix(store: RedisCounterStore, redis_prefix: str) -> None:
    for algorithm in ALGORITHMS:
        store.consume(counter_key(algorithm, "global:*:search", "ip", "10.0.0.1"), algorithm, 5, 60, 5, 1)

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key.decode() for key in client.scan_iter(match=redis_prefix + "*")]
    finally:
        client.close()
    assert len(keys) == 4
    assert all(key.startswith(redis_prefix) and key.endswith("{ip:10.0.0.1}") for key in keys)


def test_redis_blocked_request_keeps_state(store: RedisCounterStore, redis_prefix: str) -> None:
    key = counter_key("token_bucket", "tier:B:blocked", "user", "u-b")
    store.consume_at(START_US, key, "token_bucket", 1, 60, 1, 1)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        before = client.get(redis_prefix + key)
        store.consume_at(START_US + 1000, key, "token_bucket", 1, 60, 1, 1)
        after = client.get(redis_prefix + key)
    finally:
        client.close()
    assert before == after == f"{START_US + 60_000_000} 0".encode()


TAT_POLICY = (7, 60, 7)  # an emission interval of 60 s / 7, which leaves a remainder in ticks


@pytest.mark.parametrize(
    ("stored", "tat_us", "tat_ticks"),
    [
        # "<microseconds> <remainder in ticks of 1/limit µs>", as every release writes it.
        (f"{START_US + 20_000_000} 3", START_US + 20_000_000, 3),
        # "<microseconds>" alone, remainder 0.
        (f"{START_US + 20_000_000}", START_US + 20_000_000, 0),
        # A TAT further ahead than the bucket spans, as after the policy's capacity was lowered.
        (f"{START_US + 600_000_000} 0", START_US + 600_000_000, 0),
    ],
)
@pytest.mark.parametrize("algorithm", ["token_bucket", "gcra"])
def test_redis_tat_reads_stored_formats(
    store: RedisCounterStore, redis_prefix: str, algorithm: str, stored: str, tat_us: int, tat_ticks: int
) -> None:
    limit, window, capacity = TAT_POLICY
    key = counter_key(algorithm, "tier:B:format", "user", f"u-{len(stored)}-{tat_ticks}")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.set(redis_prefix + key, stored, px=3_600_000)
        steps = [(START_US + offset_ms * 1000, units) for offset_ms, units in ((0, 1), (0, 3), (5_000, 2), (400_000, 7))]

        actual = [store.consume_at(now_us, key, algorithm, limit, window, capacity, units) for now_us, units in steps]
        written = client.get(redis_prefix + key)
    finally:
        client.close()

    expected = replay_python_twin_from(algorithm, (tat_us + tat_ticks / limit) / 1e6, steps, limit, window, capacity)
    assert_same_outcomes(expected, actual)
    assert written is not None
    assert re.fullmatch(rb"\d+ \d+", written), written


def replay_python_twin_from(
    algorithm: str, tat: float, steps: list[tuple[int, int]], limit: int, window: int, capacity: int
) -> list[Any]:
    """Like ``replay_python_twin``, from a stored TAT (Unix seconds) instead of a fresh counter."""
    state: Any = tat
    outcomes = []
    for now_us, units in steps:
        outcome = ALGORITHM_FUNCTIONS[algorithm](state, now_us / 1e6, units, limit, window, capacity)
        if outcome[0]:
            state = outcome[5]
        outcomes.append(outcome[:5])
    return outcomes


def test_redis_tat_writes_remainder_format(store: RedisCounterStore, redis_prefix: str) -> None:
    key = counter_key("token_bucket", "tier:B:format", "user", "u-written")
    limit, window, capacity = TAT_POLICY

    store.consume_at(START_US, key, "token_bucket", limit, window, capacity, 2)

    client = redis.Redis.from_url(REDIS_URL)
    try:
        written = client.get(redis_prefix + key)
    finally:
        client.close()
    # Two units of 60 s / 7 are 120,000,000 / 7 µs: 17,142,857 µs and 1 tick.
    assert written == f"{START_US + 17_142_857} 1".encode()


def test_redis_scripts_reload_after_flush(private_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisCounterStore(private_redis.url, timeout_ms=1000)
    key = counter_key("fixed_window", "tier:B:flush", "user", "u-f")
    store.consume(key, "fixed_window", 3, 60, 3, 1)

    private_redis.client().script_flush()
    outcome = store.consume(key, "fixed_window", 3, 60, 3, 1)

    assert outcome[:2] == (True, 1)
    store.close()


def test_redis_async_scripts_reload_after_flush(private_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisCounterStore(private_redis.url, timeout_ms=1000)
    key = counter_key("sliding_window", "tier:B:flush", "user", "u-af")

    async def scenario() -> list[Any]:
        first = await store.aconsume(key, "sliding_window", 3, 60, 3, 1)
        private_redis.client().script_flush()
        second = await asyncio.gather(*[store.aconsume(key, "sliding_window", 3, 60, 3, 1) for _ in range(4)])
        await store.aclose()
        return [first, *second]

    outcomes = asyncio.run(scenario())

    assert [outcome[0] for outcome in outcomes] == [True, True, True, False, False]


def test_redis_async_matches_sync(store: RedisCounterStore) -> None:
    async def scenario() -> list[Any]:
        results = [await store.aconsume(counter_key(a, "tier:B:x", "user", "u-async"), a, 5, 60, 5, 2) for a in ALGORITHMS for _ in range(3)]
        await store.aclose()
        return results

    outcomes = asyncio.run(scenario())

    assert [outcome[:2] for outcome in outcomes] == [(True, 3), (True, 1), (False, 1)] * 4


def test_redis_async_coalesces_one_tick(store: RedisCounterStore) -> None:
    key = counter_key("token_bucket", "tier:B:burst", "user", "u-tick")

    async def scenario() -> tuple[list[Any], int]:
        await store.aconsume(counter_key("gcra", "tier:B:warm", "user", "u-warm"), "gcra", 5, 60, 5, 1)
        pipeline = store._pipeline
        assert pipeline is not None
        writes = count_writes(pipeline)
        outcomes = await asyncio.gather(*[store.aconsume(key, "token_bucket", 5, 60, 5, 1) for _ in range(64)])
        await store.aclose()
        return outcomes, writes()

    outcomes, writes = asyncio.run(scenario())

    assert sum(outcome[0] for outcome in outcomes) == 5
    assert writes == 1


def count_writes(pipeline: Any) -> Callable[[], int]:
    """Count the writes on the pipeline's transport (one per coalesced batch)."""
    transport = pipeline._transport
    original = transport.write
    calls = [0]

    def write(data: bytes) -> None:
        calls[0] += 1
        original(data)

    transport.write = write
    return lambda: calls[0]


def test_redis_async_survives_new_event_loop(store: RedisCounterStore) -> None:
    key = counter_key("fixed_window", "tier:B:loops", "user", "u-loops")

    first = asyncio.run(store.aconsume(key, "fixed_window", 5, 3600, 5, 1))
    second = asyncio.run(store.aconsume(key, "fixed_window", 5, 3600, 5, 1))

    assert first[1] == 4
    assert second[1] == 3


def test_redis_clock_is_redis_time(store: RedisCounterStore) -> None:
    key = counter_key("fixed_window", "tier:B:clock", "user", "u-clock")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    now = seconds + micros / 1e6

    outcome = store.consume(key, "fixed_window", 5, 60, 5, 1)

    window_end = (now // 60 + 1) * 60
    assert outcome[2] == pytest.approx(window_end - now, abs=0.5)
    assert abs(time.time() - now) < 5


def test_parse_cluster_url_reads_nodes_and_login() -> None:
    nodes, options = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001/0")

    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert options == {"ssl": False, "username": "app", "password": "s@cret"}


def test_redis_ping_reports_reachability(private_redis) -> None:  # type: ignore[no-untyped-def]
    store = RedisCounterStore(private_redis.url, timeout_ms=200)

    async def aping() -> None:
        try:
            await store.aping()
        finally:
            await store.aclose()

    store.ping()
    asyncio.run(aping())
    private_redis.kill()

    with pytest.raises(StoreError):
        store.ping()
    with pytest.raises(StoreError):
        asyncio.run(aping())


def test_redis_async_wrong_password_fails_open(private_redis) -> None:  # type: ignore[no-untyped-def]
    client = private_redis.client()
    client.config_set("requirepass", "right-password")
    client.close()
    store = RedisCounterStore(
        private_redis.url.replace("redis://", "redis://:wrong-password@"), timeout_ms=500, preload=False
    )

    async def scenario() -> str:
        try:
            await store.aconsume("gcra:x:{user:1}", "gcra", 5, 60, 5, 1)
        except StoreError as error:
            return str(error)
        finally:
            await store.aclose()
        return "no error"

    message = asyncio.run(scenario())

    assert "rejected AUTH" in message
    assert "wrong-password" not in message


def test_redis_password_and_database_from_url(private_redis) -> None:  # type: ignore[no-untyped-def]
    client = private_redis.client()
    client.config_set("requirepass", "s3cret")
    client.close()
    url = f"redis://:s3cret@127.0.0.1:{private_redis.port}/3"
    store = RedisCounterStore(url, prefix="auth:", timeout_ms=1000)
    key = counter_key("token_bucket", "tier:B:auth", "user", "u-auth")

    first = store.consume(key, "token_bucket", 5, 60, 5, 1)

    async def scenario() -> Any:
        try:
            return await store.aconsume(key, "token_bucket", 5, 60, 5, 1)
        finally:
            await store.aclose()

    second = asyncio.run(scenario())
    checker = redis.Redis(port=private_redis.port, password="s3cret", db=3)
    try:
        stored = checker.exists("auth:" + key)
    finally:
        checker.close()
    assert first[1] == 4
    assert second[1] == 3
    assert stored == 1


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_redis_async_forgives_loop_stall(redis_prefix: str, loop_name: str) -> None:
    import uvloop

    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_ms=50)
    key = counter_key("token_bucket", "tier:B:media_upload", "user", "u-stalled")

    async def scenario() -> Any:
        await store.aconsume(key, "token_bucket", 5, 60, 5, 1)  # connect first

        # Right after the write, another socket's callback keeps the loop busy
        # past the 50 ms budget while Redis replies. The callback runs in the
        # poll phase, after which uvloop runs due timers before polling again.
        loop = asyncio.get_running_loop()
        busy, trigger = socket.socketpair()
        loop.add_reader(busy, lambda: (busy.recv(1), time.sleep(0.2)))
        pipeline = store._pipeline
        assert pipeline is not None
        write = pipeline._flush

        def write_then_stall() -> None:
            write()
            trigger.send(b"x")

        pipeline._flush = write_then_stall  # type: ignore[method-assign]
        try:
            return await store.aconsume(key, "token_bucket", 5, 60, 5, 1)
        finally:
            loop.remove_reader(busy)
            busy.close()
            trigger.close()

    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            outcome = runner.run(scenario())
            runner.run(store.aclose())
    finally:
        store.close()

    assert outcome[0] is True
    assert outcome[1] == 3
    assert store.breaker.failures == 0


def test_async_gate_context_warms_redis(redis_prefix: str, tmp_path: Any) -> None:
    from rampgate.gate import AsyncGate

    async def scenario() -> bool:
        async with AsyncGate(
            database_url=f"sqlite:///{tmp_path}/catalog.db", counter_store="redis", redis_url=REDIS_URL,
            redis_prefix=redis_prefix, audit=False,
        ) as gate:
            pipeline = gate.store._pipeline
            return pipeline is not None and pipeline.is_connected

    assert asyncio.run(scenario()) is True


def test_async_gate_warm_reports_unreachable_redis(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from rampgate.gate import AsyncGate

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def scenario() -> bool:
        gate = AsyncGate(
            database_url=f"sqlite:///{tmp_path}/catalog.db", counter_store="redis",
            redis_url=f"redis://127.0.0.1:{closed_port}/0", audit=False,
        )
        try:
            return await gate.warm(timeout_seconds=2.0)
        finally:
            await gate.aclose()

    assert asyncio.run(scenario()) is False
    assert "gate.store_warm_up_failed" in caplog.text
