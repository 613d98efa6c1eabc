"""The catalog on PostgreSQL: migrations, operators' SQL, and changes reaching running processes within a second."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from e2e.server import start_server
from gate_workers import watch_decisions
from servers import PostgresServer, wait_until

from rampgate.catalog.database import (
    create_catalog_engine,
    current_revision,
    head_revision,
    migrate,
)
from rampgate.catalog.repository import Catalog
from rampgate.catalog.watcher import CatalogWatcher
from rampgate.core.bucketing import assign_bucket

pytestmark = pytest.mark.integration

RAMPGATE = str(Path(sys.executable).with_name("rampgate"))
FLAG_GROUP = "rate_limit_enforcement"

ENABLE_AT_1 = """update public.feature_flags set enabled = true, rollout_percentage = 1, updated_at = now()
 where flag_name = 'rate_limit_enforcement';"""
DISABLE = """update public.feature_flags set enabled = false, rollout_percentage = 0, updated_at = now()
 where flag_name = 'rate_limit_enforcement';"""
RAISE_LIMIT = """update public.rate_limit_configs set limit_value = 10, window_seconds = 60, updated_at = now()
 where scope = 'tier' and tier = 'B' and action = 'media_upload';"""
TRUST_TIER_A = """insert into public.trust_profiles (actor_type, actor_id, trust_score, risk_tier, enforcement_level)
 values ('user', '{actor_id}', 95.0, 'A', 'E1')
 on conflict (actor_type, actor_id) do update set risk_tier = 'A', trust_score = 95.0;"""
TOP_BLOCKED = """select actor_type, actor_id, action,
       count(*) filter (where allowed = false) as blocked_count,
       count(*) filter (where allowed = true)  as allowed_count
  from public.rate_limit_audits where created_at > now() - interval '1 hour'
 group by actor_type, actor_id, action order by blocked_count desc limit 10;"""


def psql(url: str, statement: str) -> str:
    """Run one statement with psql, stopping on the first error."""
    result = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", statement],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def cohort_actor(percentage: int) -> str:
    """An actor id whose bucket is within ``percentage`` for the enforcement flag."""
    number = 0
    while assign_bucket(FLAG_GROUP, f"user-{number}") > percentage:
        number += 1
    return f"user-{number}"


def migrate_with_cli(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPGATE, "migrate", "--json"], env={"RAMPGATE_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture
def migrated_url(postgres_url: str) -> str:
    result = migrate_with_cli(postgres_url)
    assert result.returncode == 0, result.stderr
    return postgres_url


def test_migrate_cli_on_postgres(postgres_url: str) -> None:
    first = migrate_with_cli(postgres_url)
    second = migrate_with_cli(postgres_url)

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["to_revision"] == head_revision()
    assert json.loads(first.stdout)["from_revision"] is None
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["from_revision"] == head_revision()
    with psycopg.connect(postgres_url) as connection:
        policies = connection.execute("select count(*) from rate_limit_configs").fetchone()
        flag = connection.execute("select enabled, rollout_percentage from feature_flags").fetchone()
    assert policies == (24,)
    assert flag == (False, 0)


def test_operator_statements_run_unchanged(migrated_url: str) -> None:
    for statement in (ENABLE_AT_1, DISABLE, RAISE_LIMIT, TRUST_TIER_A.format(actor_id="u-42"),
                      TRUST_TIER_A.format(actor_id="u-42")):
        psql(migrated_url, statement)
    with psycopg.connect(migrated_url, autocommit=True) as connection:
        connection.execute(
            "insert into rate_limit_audits (actor_type, actor_id, action, allowed) values "
            "('user', 'u-1', 'search', false), ('user', 'u-1', 'search', true), ('user', 'u-2', 'search', true)"
        )

    report = psql(migrated_url, TOP_BLOCKED).splitlines()

    assert report == ["user|u-1|search|1|1", "user|u-2|search|0|1"]
    with psycopg.connect(migrated_url) as connection:
        limit = connection.execute(
            "select limit_value from rate_limit_configs where tier = 'B' and action = 'media_upload'"
        ).fetchone()
        trust = connection.execute("select risk_tier, enforcement_level from trust_profiles").fetchall()
    assert limit == (10,)
    assert trust == [("A", "E1")]


def test_sql_changes_reach_running_processes(migrated_url: str) -> None:
    actor_id = cohort_actor(1)
    context = multiprocessing.get_context("spawn")
    changes = [context.Queue() for _ in range(2)]
    stop = context.Event()
    processes = [
        context.Process(target=watch_decisions, args=(migrated_url, actor_id, queue, stop)) for queue in changes
    ]
    for process in processes:
        process.start()
    try:
        for queue in changes:
            assert queue.get(timeout=60)[0] == "ready"
            assert queue.get(timeout=10)[2] == ("shadow", 5, "B")

        steps = [
            ("enable at 1 %", ENABLE_AT_1, ("enforce", 5, "B")),
            ("raise the tier-B limit", RAISE_LIMIT, ("enforce", 10, "B")),
            ("trust the actor", TRUST_TIER_A.format(actor_id=actor_id), ("enforce", 20, "A")),
            ("disable", DISABLE, ("shadow", 20, "A")),
        ]
        delays: dict[str, list[float]] = {}
        for name, statement, expected in steps:
            issued = time.time()
            psql(migrated_url, statement)
            delays[name] = [wait_for_change(queue, expected) - issued for queue in changes]
    finally:
        stop.set()
        for process in processes:
            process.join(20)

    for name, seen in delays.items():
        print(f"{name}: decisions changed after " + ", ".join(f"{delay * 1000:.0f} ms" for delay in seen))
    assert all(process.exitcode == 0 for process in processes)
    assert max(max(seen) for seen in delays.values()) < 1.0


def wait_for_change(queue: Any, expected: tuple[str, int, str]) -> float:
    """Return the time at which a process first decided with ``expected``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kind, at, seen = queue.get(timeout=max(deadline - time.monotonic(), 0.01))
        if kind == "change" and seen == expected:
            return float(at)
    raise AssertionError(f"no process decision showed {expected} within 10 s")


def test_watcher_reconnects_after_restart(private_postgres: PostgresServer) -> None:
    url = private_postgres.create_database("catalog")
    engine = create_catalog_engine(url)
    migrate(engine)
    watcher = CatalogWatcher(Catalog(engine))
    watcher.start()
    try:
        private_postgres.stop()
        time.sleep(1)
        private_postgres.start()
        psql(url, ENABLE_AT_1)
        wait_until(lambda: watcher.snapshot.route("search") is not None and watcher.snapshot.route("search").percentage == 1,
                   10, what="the watcher sees the change made after the restart")
        watcher_error = watcher.last_error
        psql(url, DISABLE)
        changed = time.monotonic()
        wait_until(lambda: watcher.snapshot.route("search").percentage == 0, 2, interval=0.01,
                   what="the watcher sees the next change")
        delay = time.monotonic() - changed
    finally:
        watcher.stop()
        engine.dispose()
    print(f"after reconnecting, a change reached the watcher in {delay * 1000:.0f} ms")
    assert watcher_error is None
    assert delay < 1.0


def test_catalog_revision_is_head(migrated_url: str) -> None:
    engine = create_catalog_engine(migrated_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


SERVICE_TOKEN = "service-token-for-catalog-e2e"


@pytest.mark.e2e
def test_sql_changes_reach_serve_workers(migrated_url: str, redis_prefix: str, tmp_path: Path) -> None:
    actor_id = cohort_actor(1)
    env = {
        "RAMPGATE_DATABASE_URL": migrated_url,
        "RAMPGATE_COUNTER_STORE": "redis",
        "RAMPGATE_REDIS_URL": os.environ.get("RAMPGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "RAMPGATE_REDIS_PREFIX": redis_prefix,
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_AUDIT_SPILL_PATH": str(tmp_path / "spill"),
        "RAMPGATE_CONFIG": str(tmp_path / "absent.toml"),
    }
    steps = [
        ("enable at 1 %", ENABLE_AT_1, ("enforce", 5, "B")),
        ("raise the tier-B limit", RAISE_LIMIT, ("enforce", 10, "B")),
        ("trust the actor", TRUST_TIER_A.format(actor_id=actor_id), ("enforce", 20, "A")),
        ("disable", DISABLE, ("shadow", 20, "A")),
    ]
    delays = {}
    with start_server(env, workers=2) as server:
        assert check(server.url, actor_id) == ("shadow", 5, "B")
        for name, statement, expected in steps:
            issued = time.monotonic()
            psql(migrated_url, statement)
            seen = poll_decisions(server.url, actor_id, seconds=2.0)
            stale = [at for at, state in seen if state != expected]
            # The delay lasts until the last request that still got the old state.
            delays[name] = (max(stale) - issued) if stale else 0.0
            assert [state for _, state in seen[-10:]] == [expected] * 10, name

    for name, delay in delays.items():
        print(f"rampgate serve --workers 2, {name}: last old decision requested {delay * 1000:.0f} ms after psql started")
    assert max(delays.values()) < 1.0


# No keep-alive: a new connection per request lets the kernel spread requests over both workers.
CLIENT = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5)


def check(url: str, actor_id: str) -> tuple[str, int, str]:
    response = CLIENT.post(
        url + "/v1/check",
        json={"actor_type": "user", "actor_id": actor_id, "action": "media_upload"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
    )
    response.raise_for_status()
    body = response.json()
    return body["mode"], body["limit"], body["tier"]


def poll_decisions(url: str, actor_id: str, seconds: float) -> list[tuple[float, tuple[str, int, str]]]:
    """Request decisions for ``seconds``; return (time the request was sent, (mode, limit, tier)) pairs.

    A worker decides between sending and receiving, so the send time is the
    earliest moment at which an answer shows the worker's state, and the
    response time of a loaded machine does not count as propagation delay.
    """
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sent = time.monotonic()
        seen.append((sent, check(url, actor_id)))
    return seen
