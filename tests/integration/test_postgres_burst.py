"""A burst of requests for one key on the PostgreSQL counter store, with the default 50 ms time budget.

Calls for one key are coalesced within a process and sent as batches of
``rampgate_consume_batch()``, so a burst must admit exactly the limit and
never fail open on lock waits. The same holds for a burst of ``POST
/v1/check`` sent right after ``rampgate serve --workers 2`` reports ready, on
PostgreSQL and on Redis counters.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from e2e.server import start_server
from twins import (
    ALGORITHMS,
    POLICIES,
    START_US,
    assert_same_outcomes,
    policy_numbers,
    random_steps,
    replay_python_twin,
)

from rampgate import AsyncGate, Gate
from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.catalog.repository import Catalog
from rampgate.core.policies import Policy
from rampgate.errors import StoreError, StoreTimeout
from rampgate.stores.base import counter_key
from rampgate.stores.postgres import CONSUME_BATCH_SQL, PostgresCounterStore, libpq_url

pytestmark = pytest.mark.integration

BURST = 300
DEFAULT_TIMEOUT_MS = 50
# Three calls at once on another key send one single call and one batch, so the
# burst does not pay for planning either function on a fresh connection.
WARM_UP_CALLS = 3
SERVICE_TOKEN = "service-token-for-burst-e2e"
REDIS_URL = os.environ.get("RAMPGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Log events of a store failure, or of a failed warm-up, in a server's JSON log lines.
STORE_WARNINGS = ('"store.timed_out"', '"store.degraded"', '"store.warm_up_failed"', '"gate.store_warm_up_failed"')


@pytest.fixture
def migrated_url(postgres_url: str) -> Iterator[str]:
    """A migrated database that enforces tier-B media_upload at 5 per 60 s for everyone."""
    engine = create_catalog_engine(postgres_url)
    try:
        migrate(engine)
        catalog = Catalog(engine)
        catalog.set_flag("rate_limit_enforcement", enabled=True, percentage=100)
        catalog.set_policy(
            Policy(scope="tier", tier="B", action="media_upload", limit_value=5, window_seconds=60)
        )
    finally:
        engine.dispose()
    yield postgres_url


@pytest.fixture
def gc_disabled() -> Iterator[None]:
    """Collect garbage now and not again during the test.

    A full collection in this test process pauses it for about 70 ms, longer
    than the 50 ms budget, and fails a call whose rows PostgreSQL returned in time.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_aconsume_burst_admits_limit(migrated_url: str, gc_disabled: None, algorithm: str) -> None:
    store = PostgresCounterStore(migrated_url)
    key = counter_key(algorithm, "tier:B:burst", "user", "u-burst")

    async def burst() -> list[Any]:
        try:
            warm_up_key = counter_key(algorithm, "tier:B:burst", "user", "warm-up")
            await asyncio.gather(*[store.aconsume(warm_up_key, algorithm, 5, 60, 5, 1) for _ in range(WARM_UP_CALLS)])
            return await asyncio.gather(
                *[store.aconsume(key, algorithm, 5, 60, 5, 1) for _ in range(BURST)], return_exceptions=True
            )
        finally:
            await store.aclose()

    results = asyncio.run(burst())

    failures = [result for result in results if isinstance(result, BaseException)]
    assert store.timeout_ms == DEFAULT_TIMEOUT_MS
    assert failures == []
    assert sum(outcome[0] for outcome in results) == 5


def test_async_gate_burst_never_fails_open(migrated_url: str, gc_disabled: None) -> None:
    async def burst() -> list[Any]:
        async with AsyncGate(database_url=migrated_url, counter_store="postgres", watch=False, audit=False) as gate:
            assert gate.settings.store_timeout_ms == DEFAULT_TIMEOUT_MS
            await asyncio.gather(*[gate.decide("user", "warm-up", "media_upload") for _ in range(WARM_UP_CALLS)])
            return await asyncio.gather(*[gate.decide("user", "u-burst", "media_upload") for _ in range(BURST)])

    decisions = asyncio.run(burst())

    modes = Counter(decision.mode for decision in decisions)
    assert modes == {"enforce": BURST}
    assert sum(decision.allowed for decision in decisions) == 5
    assert Counter(decision.reason for decision in decisions) == {"ok": 5, "limited": BURST - 5}


def test_gate_threads_burst_never_fails_open(migrated_url: str, gc_disabled: None) -> None:
    gate = Gate(database_url=migrated_url, counter_store="postgres", watch=False, audit=False)
    decisions: list[Any] = []
    start = threading.Barrier(30)

    def fire() -> None:
        start.wait()
        for _ in range(10):
            decisions.append(gate.decide("user", "u-threads", "media_upload"))

    try:
        assert gate.settings.store_timeout_ms == DEFAULT_TIMEOUT_MS
        gate.decide("user", "warm-up", "media_upload")
        threads = [threading.Thread(target=fire) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        gate.close()

    assert len(decisions) == 300
    assert Counter(decision.mode for decision in decisions) == {"enforce": 300}
    assert sum(decision.allowed for decision in decisions) == 5


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("policy", POLICIES)
def test_consume_batch_matches_python_twin(migrated_url: str, algorithm: str, policy: tuple[int, int, int]) -> None:
    limit, window, capacity = policy_numbers(algorithm, policy)
    rng = random.Random(f"batch{algorithm}{policy}")
    key = counter_key(algorithm, "tier:B:batch", "user", "twin-" + "-".join(map(str, policy)))

    # Batches of 1 to 8 requests, each batch at its first step's time.
    steps: list[tuple[int, int]] = []
    batches: list[tuple[int, list[int]]] = []
    remaining_steps = random_steps(rng, capacity, window)
    while remaining_steps:
        size = rng.randint(1, 8)
        now_us = remaining_steps[0][0]
        units = [step_units for _, step_units in remaining_steps[:size]]
        del remaining_steps[:size]
        batches.append((now_us, units))
        steps.extend((now_us, step_units) for step_units in units)

    expected = replay_python_twin(algorithm, steps, limit, window, capacity)
    actual: list[Any] = []
    with psycopg.connect(libpq_url(migrated_url), autocommit=True) as connection:
        for now_us, units in batches:
            rows = connection.execute(
                CONSUME_BATCH_SQL, (key, algorithm, limit, window, capacity, units, now_us)
            ).fetchall()
            assert [row[0] for row in rows] == list(range(1, len(units) + 1))
            actual.extend(_store_outcome(row[1:]) for row in rows)

    assert len(actual) == len(steps)
    assert_same_outcomes(expected, actual)


def test_consume_batch_of_nothing_returns_no_rows(migrated_url: str) -> None:
    with psycopg.connect(libpq_url(migrated_url), autocommit=True) as connection:
        rows = connection.execute(CONSUME_BATCH_SQL, ("empty:{user:1}", "token_bucket", 5, 60, 5, [], START_US)).fetchall()

    assert rows == []


def test_batch_over_budget_fails_every_request(migrated_url: str) -> None:
    store = PostgresCounterStore(migrated_url, timeout_ms=200)
    key = counter_key("token_bucket", "tier:B:locked", "user", "u-locked")
    store.consume(key, "token_bucket", 5, 60, 5, 1)
    holder = psycopg.connect(libpq_url(migrated_url))
    holder.execute("select * from rate_limit_counters where counter_key = %s for update", (key,))

    async def burst() -> list[Any]:
        try:
            await store.aping()
            return await asyncio.gather(
                *[store.aconsume(key, "token_bucket", 5, 60, 5, 1) for _ in range(20)], return_exceptions=True
            )
        finally:
            await store.aclose()

    try:
        results = asyncio.run(burst())
    finally:
        holder.rollback()
        holder.close()

    assert len(results) == 20
    assert all(isinstance(result, StoreError) for result in results), results


def test_slow_call_spares_queued_requests(migrated_url: str) -> None:
    store = PostgresCounterStore(migrated_url, timeout_ms=500)
    key = counter_key("token_bucket", "tier:B:slow", "user", "u-slow")
    store.consume(key, "token_bucket", 5, 60, 5, 1)
    holder = psycopg.connect(libpq_url(migrated_url))
    holder.execute("select * from rate_limit_counters where counter_key = %s for update", (key,))

    async def scenario() -> tuple[BaseException | None, list[Any]]:
        try:
            first = asyncio.create_task(store.aconsume(key, "token_bucket", 5, 60, 5, 1))
            # One turn of the loop puts the first call in flight, so the next ones queue behind it.
            await asyncio.sleep(0)
            queued = [asyncio.create_task(store.aconsume(key, "token_bucket", 5, 60, 5, 1)) for _ in range(19)]
            first_error = None
            try:
                await first
            except StoreError as error:
                first_error = error
            # The first call waited for the row lock past its budget. Release the lock now.
            await asyncio.to_thread(holder.rollback)
            return first_error, await asyncio.gather(*queued, return_exceptions=True)
        finally:
            await store.aclose()

    try:
        first_error, results = asyncio.run(scenario())
    finally:
        holder.close()

    failures = [result for result in results if isinstance(result, BaseException)]
    assert isinstance(first_error, StoreTimeout)
    assert failures == []
    assert sum(outcome[0] for outcome in results) == 4
    assert store.breaker.is_open is False
    assert store.breaker.failures == 1


def test_cancelled_waiter_consumes_nothing(migrated_url: str) -> None:
    store = PostgresCounterStore(migrated_url, timeout_ms=5000)
    key = counter_key("token_bucket", "tier:B:cancel", "user", "u-cancel")
    holder = psycopg.connect(libpq_url(migrated_url))

    async def scenario() -> tuple[Any, Any]:
        try:
            await store.aconsume(key, "token_bucket", 5, 60, 5, 1)
            holder.execute("select * from rate_limit_counters where counter_key = %s for update", (key,))
            first = asyncio.create_task(store.aconsume(key, "token_bucket", 5, 60, 5, 1))
            # One turn of the loop puts the first call in flight, so the next three queue behind it.
            await asyncio.sleep(0)
            waiters = [asyncio.create_task(store.aconsume(key, "token_bucket", 5, 60, 5, 1)) for _ in range(3)]
            await asyncio.sleep(0)
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            await asyncio.to_thread(holder.rollback)
            return await first, await store.aconsume(key, "token_bucket", 5, 60, 5, 1)
        finally:
            await store.aclose()

    try:
        first, last = asyncio.run(scenario())
    finally:
        holder.close()

    assert first[:2] == (True, 3)
    assert last[:2] == (True, 2)


def _store_outcome(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Convert a row of microseconds into the store's outcome in seconds, as PostgresCounterStore does."""
    next_unit_after = row[4]
    return (
        row[0],
        row[1],
        row[2] / 1e6,
        row[3] / 1e6,
        None if next_unit_after < 0 else next_unit_after / 1e6,
    )


def server_env(migrated_url: str, tmp_path: Path, counter_store: str, redis_prefix: str) -> dict[str, str]:
    env = {
        "RAMPGATE_DATABASE_URL": migrated_url,
        "RAMPGATE_COUNTER_STORE": counter_store,
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_AUDIT_SPILL_PATH": str(tmp_path / "spill"),
        "RAMPGATE_CONFIG": str(tmp_path / "absent.toml"),
    }
    if counter_store == "redis":
        env["RAMPGATE_REDIS_URL"] = REDIS_URL
        env["RAMPGATE_REDIS_PREFIX"] = redis_prefix
    return env


async def send_checks(url: str, actor_id: str) -> list[dict[str, Any]]:
    """Send ``BURST`` checks for one actor at once, each on its own connection, and return the bodies."""
    body = {"actor_type": "user", "actor_id": actor_id, "action": "media_upload"}
    headers = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    # One connection per request lets the kernel spread the burst over both workers.
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *[client.post(url + "/v1/check", json=body, headers=headers) for _ in range(BURST)]
        )
    assert [response.status_code for response in responses] == [200] * BURST
    return [response.json() for response in responses]


def store_warnings(logs: str) -> list[dict[str, Any]]:
    """Return the log records of a server's JSON log lines that report a store failure."""
    records = []
    for line in logs.splitlines():
        if any(event in line for event in STORE_WARNINGS):
            records.append(json.loads(line))
    return records


@pytest.mark.e2e
@pytest.mark.parametrize("counter_store", ["postgres", "redis"])
def test_serve_burst_after_start(
    migrated_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counter_store: str
) -> None:
    # The server must run with the default 50 ms budget, whatever the calling shell sets.
    monkeypatch.delenv("RAMPGATE_STORE_TIMEOUT_MS", raising=False)
    env = server_env(migrated_url, tmp_path, counter_store, redis_prefix)

    with start_server(env, workers=2) as server:
        bodies = asyncio.run(send_checks(server.url, "u-burst"))
        logs = server.logs()

    reasons = Counter(body["reason"] for body in bodies)
    modes = Counter(body["mode"] for body in bodies)
    allowed = sum(body["allowed"] for body in bodies)
    print(f"{counter_store}: {allowed} allowed, modes {dict(modes)}, reasons {dict(reasons)}, "
          f"store warnings {[record.get('error') for record in store_warnings(logs)]}")
    assert modes == {"enforce": BURST}
    assert reasons == {"ok": 5, "limited": BURST - 5}
    assert allowed == 5
    assert store_warnings(logs) == []
