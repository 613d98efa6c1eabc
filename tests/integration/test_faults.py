"""Store outages on private servers: decisions fail open within the budget, and everything recovers by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from servers import PostgresServer, RedisServer, wait_until

from rampgate import AsyncGate, Gate
from rampgate.catalog import schema
from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.core.policies import Policy
from rampgate.errors import StoreError
from rampgate.settings import load_settings
from rampgate.stores.base import counter_key
from rampgate.stores.postgres import PostgresCounterStore

pytestmark = pytest.mark.integration

BUDGET_MS = 50
# Generous: the budget plus scheduling slack on a loaded machine.
LATENCY_BOUND = 10 * BUDGET_MS / 1000


def enforce_everyone(gate: Gate | AsyncGate) -> None:
    gate.catalog.set_flag("rate_limit_enforcement", enabled=True, percentage=100)
    gate.refresh()


def redis_gate(server: RedisServer, tmp_path: Path, gate_class: type[Any] = Gate) -> Any:
    gate = gate_class(
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        counter_store="redis",
        redis_url=server.url,
        store_timeout_ms=BUDGET_MS,
        watch=False,
        audit=False,
    )
    enforce_everyone(gate)
    return gate


def assert_exact(outcomes: list[Any]) -> None:
    """Five uploads of a fresh tier-B actor pass, the sixth is blocked, all enforced."""
    assert [decision.mode for decision in outcomes] == ["enforce"] * 6
    assert [decision.allowed for decision in outcomes] == [True] * 5 + [False]


def wait_for_enforce(decide: Any, timeout: float = 10.0) -> None:
    wait_until(lambda: decide().mode == "enforce", timeout, interval=0.05, what="decisions enforced again")


def test_redis_killed_fails_open_then_recovers(private_redis: RedisServer, tmp_path: Path) -> None:
    gate = redis_gate(private_redis, tmp_path)
    try:
        assert_exact([gate.decide("user", "before", "media_upload") for _ in range(6)])

        private_redis.kill()
        latencies = []
        decisions = []
        for number in range(200):
            started = time.perf_counter()
            decisions.append(gate.decide("user", f"during-{number}", "media_upload"))
            latencies.append(time.perf_counter() - started)

        private_redis.start()
        wait_for_enforce(lambda: gate.decide("user", "probe", "search"))
        after = [gate.decide("user", "after", "media_upload") for _ in range(6)]
    finally:
        gate.close()

    print(f"while Redis was down: max decision latency {max(latencies) * 1000:.1f} ms over {len(latencies)} decisions")
    assert {decision.mode for decision in decisions} == {"fail_open"}
    assert all(decision.allowed for decision in decisions)
    assert max(latencies) < LATENCY_BOUND
    assert_exact(after)


def test_redis_frozen_times_out_then_recovers(private_redis: RedisServer, tmp_path: Path) -> None:
    gate = redis_gate(private_redis, tmp_path)
    process = private_redis.process
    assert process is not None
    try:
        gate.decide("user", "warm", "search")
        os.kill(process.pid, signal.SIGSTOP)
        latencies = []
        decisions = []
        try:
            for number in range(50):
                started = time.perf_counter()
                decisions.append(gate.decide("user", f"frozen-{number}", "media_upload"))
                latencies.append(time.perf_counter() - started)
        finally:
            os.kill(process.pid, signal.SIGCONT)

        wait_for_enforce(lambda: gate.decide("user", "probe", "search"))
        after = [gate.decide("user", "thawed", "media_upload") for _ in range(6)]
    finally:
        gate.close()

    print(f"while Redis was frozen: max decision latency {max(latencies) * 1000:.1f} ms")
    assert {decision.mode for decision in decisions} == {"fail_open"}
    assert max(latencies) < LATENCY_BOUND
    assert_exact(after)


def test_redis_killed_under_async_load(private_redis: RedisServer, tmp_path: Path) -> None:
    gate = redis_gate(private_redis, tmp_path, AsyncGate)
    latencies: list[float] = []
    modes: list[str] = []

    async def worker(number: int, stop: asyncio.Event) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            started = time.perf_counter()
            decision = await gate.decide("user", f"load-{number}-{sequence}", "search")
            latencies.append(time.perf_counter() - started)
            modes.append(decision.mode)
            await asyncio.sleep(0.001)

    async def scenario() -> list[Any]:
        stop = asyncio.Event()
        workers = [asyncio.create_task(worker(number, stop)) for number in range(64)]
        await asyncio.sleep(0.3)
        private_redis.kill()
        await asyncio.sleep(1.0)
        private_redis.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (await gate.decide("user", "probe", "search")).mode != "enforce":
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)
        after = [await gate.decide("user", "after-async", "media_upload") for _ in range(6)]
        await gate.aclose()
        return after

    after = asyncio.run(scenario())

    print(f"async load: {len(latencies)} decisions, max latency {max(latencies) * 1000:.1f} ms, "
          f"{modes.count('fail_open')} failed open")
    assert modes.count("fail_open") > 0
    assert modes[-1] == "enforce"
    assert set(modes) == {"enforce", "fail_open"}
    assert max(latencies) < LATENCY_BOUND
    assert_exact(after)


def test_postgres_outage_loses_no_audit_rows(private_postgres: PostgresServer, tmp_path: Path) -> None:
    url = private_postgres.create_database("catalog")
    engine = create_catalog_engine(url)
    migrate(engine)
    settings = load_settings(
        database_url=url, counter_store="memory", audit_buffer_rows=2000, audit_spill_path=str(tmp_path / "spill"),
        store_timeout_ms=BUDGET_MS,
    )
    gate = Gate(settings=settings)
    enforce_everyone(gate)

    enforced = 0
    errors: list[BaseException] = []
    slowest = [0.0]
    stop = threading.Event()

    def load() -> None:
        nonlocal enforced
        sequence = 0
        while not stop.is_set():
            sequence += 1
            started = time.perf_counter()
            try:
                decision = gate.decide("user", f"actor-{sequence % 500}", "api_call", request_id=f"req-{sequence}")
            except BaseException as error:  # any exception is a failed decision
                errors.append(error)
                return
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            enforced += decision.mode == "enforce"
            time.sleep(0.001)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1)
        private_postgres.stop()
        outage_started = time.monotonic()
        time.sleep(30)
        private_postgres.start()
        outage = time.monotonic() - outage_started
        time.sleep(1)
    finally:
        stop.set()
        thread.join()
        gate.close()

    writer = gate.recorder
    with engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(schema.rate_limit_audits)).scalar_one()
    engine.dispose()
    print(f"PostgreSQL down {outage:.1f} s: {enforced} enforced decisions, {rows} audit rows, "
          f"slowest decision {slowest[0] * 1000:.1f} ms, counters {writer.counters()}")  # type: ignore[attr-defined]
    assert errors == []
    assert enforced > 2000
    assert writer.spilled > 0  # type: ignore[attr-defined]
    assert writer.dropped == 0  # type: ignore[attr-defined]
    assert rows == enforced


def test_postgres_counters_fail_fast_then_recover(private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database("counters")
    engine = create_catalog_engine(url)
    migrate(engine)
    engine.dispose()
    store = PostgresCounterStore(url, timeout_ms=BUDGET_MS * 4)
    key = counter_key("token_bucket", "tier:B:media_upload", "user", "restart")
    try:
        before = store.consume(key, "token_bucket", 5, 3600, 5, 1)
        private_postgres.stop()
        latencies = []
        failures = 0
        for _ in range(50):
            started = time.perf_counter()
            try:
                store.consume(key, "token_bucket", 5, 3600, 5, 1)
            except StoreError:
                failures += 1
            latencies.append(time.perf_counter() - started)

        private_postgres.start()
        wait_until(lambda: consumes(store, key), 15, interval=0.1, what="the counter store working again")
        after = store.consume(key, "token_bucket", 5, 3600, 5, 1)
    finally:
        store.close()

    print(f"PostgreSQL counters down: max call latency {max(latencies) * 1000:.1f} ms")
    assert before[1] == 4
    assert failures == 50
    assert max(latencies) < 10 * BUDGET_MS * 4 / 1000
    assert after[1] == 2


def postgres_processes(server: PostgresServer) -> list[int]:
    """Return the pids of a private server's postmaster and of every process it started."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def signal_all(pids: list[int], signal_number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass


def test_postgres_frozen_under_async_gate(private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database("frozen")
    engine = create_catalog_engine(url)
    migrate(engine)
    engine.dispose()
    latencies: list[float] = []
    decisions: list[Any] = []

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with AsyncGate(
            database_url=url, counter_store="postgres", store_timeout_ms=BUDGET_MS, watch=False, audit=False
        ) as gate:
            enforce_everyone(gate)
            await gate.store.awarm()
            before = [await gate.decide("user", "before-freeze", "media_upload") for _ in range(6)]

            # Every process of the server stops, as on a frozen host: connections stay open, nothing replies.
            frozen = postgres_processes(private_postgres)
            signal_all(frozen, signal.SIGSTOP)
            try:
                for number in range(30):
                    started = time.perf_counter()
                    decisions.append(await gate.decide("user", f"frozen-{number}", "media_upload"))
                    latencies.append(time.perf_counter() - started)
            finally:
                signal_all(frozen, signal.SIGCONT)

            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (await gate.decide("user", "probe", "search")).mode != "enforce":
                await asyncio.sleep(0.05)
            after = [await gate.decide("user", "after-thaw", "media_upload") for _ in range(6)]
            return before, after

    before, after = asyncio.run(scenario())

    print(f"PostgreSQL frozen under AsyncGate: max decision latency {max(latencies) * 1000:.1f} ms")
    assert_exact(before)
    assert {decision.mode for decision in decisions} == {"fail_open"}
    assert max(latencies) < LATENCY_BOUND
    assert_exact(after)


def consumes(store: PostgresCounterStore, key: str) -> bool:
    try:
        store.consume(key, "token_bucket", 5, 3600, 5, 1)
    except StoreError:
        return False
    return True


def test_redis_down_blocks_fail_closed_policy(private_redis: RedisServer, tmp_path: Path) -> None:
    gate = redis_gate(private_redis, tmp_path)
    try:
        gate.catalog.set_policy(
            Policy(scope="tier", tier="B", action="send_message", limit_value=60, window_seconds=60, fail_mode="closed")
        )
        gate.refresh()
        private_redis.kill()

        closed = gate.decide("user", "closed", "send_message")
        opened = gate.decide("user", "closed", "create_post")
    finally:
        gate.close()

    assert (closed.allowed, closed.mode, closed.reason, closed.retry_after) == (False, "enforce", "store_error", 1.0)
    assert (opened.allowed, opened.mode, opened.reason) == (True, "fail_open", "store_error")
