"""The PostgreSQL counter store against a real PostgreSQL: twins of the Python algorithms, locking, pruning."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from servers import wait_until
from twins import (
    ALGORITHMS,
    POLICIES,
    START_US,
    assert_same_outcomes,
    policy_numbers,
    random_steps,
    replay_python_twin,
)

from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.errors import StoreError, StoreTimeout
from rampgate.stores.base import counter_key
from rampgate.stores.postgres import PostgresCounterStore, libpq_url

pytestmark = pytest.mark.integration


POSTGRES_ADMIN_URL = os.environ.get("RAMPGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def migrated_url() -> Iterator[str]:
    """One migrated database for the module; each test uses keys of its own."""
    name = f"rampgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    url = POSTGRES_ADMIN_URL.rpartition("/")[0] + "/" + name
    engine = create_catalog_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def store(migrated_url: str) -> Iterator[PostgresCounterStore]:
    store = PostgresCounterStore(migrated_url, timeout_ms=2000)
    yield store
    store.close()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("policy", POLICIES)
def test_postgres_function_matches_python_twin(
    store: PostgresCounterStore, algorithm: str, policy: tuple[int, int, int]
) -> None:
    limit, window, capacity = policy_numbers(algorithm, policy)
    steps = random_steps(random.Random(f"{algorithm}{policy}"), capacity, window)
    key = counter_key(algorithm, "tier:B:twin", "user", "twin-" + "-".join(map(str, policy)))

    expected = replay_python_twin(algorithm, steps, limit, window, capacity)
    actual = [store.consume_at(now_us, key, algorithm, limit, window, capacity, units) for now_us, units in steps]

    assert_same_outcomes(expected, actual)
    assert any(outcome[0] for outcome in actual)
    assert not all(outcome[0] for outcome in actual)


def test_postgres_sixth_upload_waits_twelve_seconds(store: PostgresCounterStore) -> None:
    key = counter_key("token_bucket", "tier:B:media_upload", "user", "u-42")

    outcomes = [store.consume(key, "token_bucket", 5, 60, 5, 1) for _ in range(6)]

    assert [outcome[0] for outcome in outcomes] == [True] * 5 + [False]
    assert 11.9 < outcomes[5][3] <= 12.0


def test_postgres_concurrent_threads_admit_limit(store: PostgresCounterStore) -> None:
    key = counter_key("sliding_window", "tier:B:race", "user", "u-race")
    results: list[bool] = []
    start = threading.Barrier(16)

    def fire() -> None:
        start.wait()
        for _ in range(5):
            results.append(store.consume(key, "sliding_window", 7, 60, 7, 1)[0])

    threads = [threading.Thread(target=fire) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 80
    assert sum(results) == 7


def test_postgres_row_expires_when_counter_is_fresh(store: PostgresCounterStore, migrated_url: str) -> None:
    key = counter_key("gcra", "tier:B:ttl", "user", "u-ttl")

    store.consume(key, "gcra", 5, 60, 5, 1)

    with psycopg.connect(libpq_url(migrated_url)) as connection:
        row = connection.execute(
            "select extract(epoch from expires_at - clock_timestamp()) from rate_limit_counters where counter_key = %s",
            (key,),
        ).fetchone()
    assert row is not None
    assert 11 < float(row[0]) <= 12


def test_postgres_prune_deletes_expired_rows(store: PostgresCounterStore, migrated_url: str) -> None:
    expired = counter_key("token_bucket", "tier:B:old", "user", "u-old")
    current = counter_key("token_bucket", "tier:B:new", "user", "u-new")
    store.consume(expired, "token_bucket", 5, 60, 5, 1)
    store.consume(current, "token_bucket", 5, 60, 5, 1)
    with psycopg.connect(libpq_url(migrated_url)) as connection:
        connection.execute(
            "update rate_limit_counters set expires_at = clock_timestamp() - interval '1 second' where counter_key = %s",
            (expired,),
        )

    deleted = store.prune()

    with psycopg.connect(libpq_url(migrated_url)) as connection:
        keys = [row[0] for row in connection.execute(
            "select counter_key from rate_limit_counters where counter_key in (%s, %s)", (expired, current)
        )]
    assert deleted >= 1
    assert keys == [current]


def test_postgres_pruned_counter_starts_fresh(store: PostgresCounterStore, migrated_url: str) -> None:
    key = counter_key("fixed_window", "tier:B:again", "user", "u-again")
    store.consume_at(START_US, key, "fixed_window", 1, 60, 1, 1)
    with psycopg.connect(libpq_url(migrated_url)) as connection:
        connection.execute("delete from rate_limit_counters where counter_key = %s", (key,))

    outcome = store.consume_at(START_US + 61_000_000, key, "fixed_window", 1, 60, 1, 1)

    assert outcome[:2] == (True, 0)


def test_postgres_async_matches_sync(migrated_url: str) -> None:
    store = PostgresCounterStore(migrated_url, timeout_ms=2000)

    async def scenario() -> list[Any]:
        results = await asyncio.gather(
            *[store.aconsume(counter_key("token_bucket", "tier:B:a", "user", "u-async"), "token_bucket", 5, 60, 5, 1)
              for _ in range(12)]
        )
        await store.aclose()
        return results

    outcomes = asyncio.run(scenario())

    assert sum(outcome[0] for outcome in outcomes) == 5


def test_postgres_unmigrated_database_names_migrate(postgres_url: str) -> None:
    store = PostgresCounterStore(postgres_url, timeout_ms=2000)
    try:
        with pytest.raises(StoreError, match="rampgate migrate"):
            store.consume("token_bucket:x:{user:1}", "token_bucket", 5, 60, 5, 1)
    finally:
        store.close()


def test_postgres_unknown_algorithm_is_rejected(store: PostgresCounterStore) -> None:
    with pytest.raises(StoreError, match="invalid algorithm"):
        store.consume("leaky:x:{user:1}", "leaky_bucket", 5, 60, 5, 1)
    assert store.breaker.is_open is False


def test_postgres_ping_reports_reachability(store: PostgresCounterStore) -> None:
    store.ping()

    unreachable = PostgresCounterStore("postgresql://postgres@127.0.0.1:1/none", timeout_ms=200)
    try:
        with pytest.raises(StoreError):
            unreachable.ping()
    finally:
        unreachable.close()


def test_postgres_aping_reports_reachability(migrated_url: str) -> None:
    store = PostgresCounterStore(migrated_url, timeout_ms=2000)

    async def aping() -> None:
        try:
            await store.aping()
        finally:
            await store.aclose()

    asyncio.run(aping())


def test_postgres_awarm_leaves_no_counters(migrated_url: str) -> None:
    store = PostgresCounterStore(migrated_url, timeout_ms=2000)
    key = counter_key("gcra", "tier:B:warm", "user", "u-warm")

    async def warm_then_consume() -> Any:
        try:
            await store.awarm()
            return await store.aconsume(key, "gcra", 5, 60, 5, 1)
        finally:
            await store.aclose()

    outcome = asyncio.run(warm_then_consume())
    with psycopg.connect(libpq_url(migrated_url)) as connection:
        (warm_up_rows,) = connection.execute(
            "select count(*) from rate_limit_counters where counter_key like %s", ("%warm-up%",)
        ).fetchone()  # type: ignore[misc]

    assert outcome[:2] == (True, 4)
    assert warm_up_rows == 0
    assert store.breaker.failures == 0


def test_postgres_awarm_unreachable_names_target() -> None:
    store = PostgresCounterStore("postgresql://postgres@127.0.0.1:1/none", timeout_ms=200)

    async def warm() -> None:
        try:
            await store.awarm(timeout_seconds=0.5)
        finally:
            await store.aclose()

    with pytest.raises(StoreError, match="127.0.0.1:1"):
        asyncio.run(warm())


def test_postgres_lock_wait_exceeds_budget(migrated_url: str) -> None:
    async_store = PostgresCounterStore(migrated_url, timeout_ms=200)
    sync_store = PostgresCounterStore(migrated_url, timeout_ms=200)
    key = counter_key("token_bucket", "tier:B:locked", "user", "u-locked")
    sync_store.consume(key, "token_bucket", 5, 60, 5, 1)
    holder = psycopg.connect(libpq_url(migrated_url))
    holder.execute("select * from rate_limit_counters where counter_key = %s for update", (key,))

    async def scenario() -> tuple[type[BaseException] | None, float]:
        started = time.perf_counter()
        try:
            await async_store.aconsume(key, "token_bucket", 5, 60, 5, 1)
        except StoreError as error:
            return type(error), time.perf_counter() - started
        finally:
            await async_store.aclose()
        return None, time.perf_counter() - started

    try:
        failure, elapsed = asyncio.run(scenario())
        with pytest.raises(StoreTimeout):
            sync_store.consume(key, "token_bucket", 5, 60, 5, 1)
    finally:
        holder.rollback()
        holder.close()

    wait_until(lambda: consumes(sync_store, key), 5, interval=0.05, what="the counter usable after the lock is gone")
    sync_store.close()
    assert failure is StoreTimeout
    assert elapsed < 10 * 0.2


def consumes(store: PostgresCounterStore, key: str) -> bool:
    try:
        store.consume(key, "token_bucket", 5, 60, 5, 1)
    except StoreError:
        return False
    return True
