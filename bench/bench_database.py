"""Comparison 5: the approach rampgate replaces, every decision read from and written to PostgreSQL.

The per-request approach is written as such services usually are. For every
request it reads the flag, the actor's trust profile and the policy from
PostgreSQL, counts the actor's allowed audit rows within the window, decides,
and inserts the audit row, each statement in autocommit. It runs on the real
rampgate schema (its tables and indexes) in a private database that is
created for the comparison and dropped afterwards.

rampgate is ``AsyncGate.decide`` on the Redis counter store with that
PostgreSQL database as its catalog and the real audit writer running in its
thread, so every enforced decision is also written to
``rate_limit_audits`` (by COPY, off the request path).

It makes two measurements. The first is decisions per second from 16
concurrent clients over 1,000 actors: 16 connections for the per-request
approach, 16 asyncio tasks for rampgate. The second counts the requests
allowed when 50 requests of one actor with a limit of 5 arrive at once.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from time import perf_counter
from typing import Any, Awaitable, Callable

from bench.machine import POSTGRES_ADMIN_URL, REDIS_URL
from bench.runner import Skip, Stats, add_table, add_target, measure, micros, new_result, rate, ratio, size_of_run
from bench.runner import spread

NAME = "database"
TITLE = "Per-request PostgreSQL, the approach rampgate replaces"
ACTION = "api_call"
BURST_ACTION = "media_upload"  # seeded tier-B policy: 5 per 60 s
BURST_LIMIT = 5
BURST_REQUESTS = 50
CLIENTS = 16
ACTORS = 1_000
TARGET_RATIO = 10.0
FLAG = "rate_limit_enforcement"
# (rounds, per-request decisions per round, rampgate decisions per round) by size of run.
SIZES = {"tiny": (1, 64, 320), "quick": (3, 800, 4_000), "full": (7, 3_000, 16_000)}

# The per-request approach, one statement per step, as the queries in the
# operators' runbook read these tables.
READ_FLAG = "select enabled, rollout_percentage, config from feature_flags where flag_name = %s"
READ_TRUST = "select risk_tier, enforcement_level from trust_profiles where actor_type = %s and actor_id = %s"
READ_POLICY = (
    "select limit_value, window_seconds, cost_per_action from rate_limit_configs"
    " where scope = 'tier' and tier = %s and action = %s and enabled"
)
COUNT_ALLOWED = (
    "select count(*) from rate_limit_audits where actor_type = %s and actor_id = %s and action = %s"
    " and allowed and created_at > now() - make_interval(secs => %s)"
)
INSERT_AUDIT = (
    "insert into rate_limit_audits"
    " (actor_type, actor_id, action, allowed, tokens_available, tokens_consumed, request_id, context, created_at)"
    " values (%s, %s, %s, %s, %s, %s, %s, %s, now())"
)


def _database_url(name: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _create_database() -> str:
    import psycopg

    name = f"rampgate_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=2) as admin:
            admin.execute(f'create database "{name}"')
    except psycopg.Error as error:
        raise Skip(
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({error}); start it or set RAMPGATE_BENCH_POSTGRES_URL"
        ) from error
    return name


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


def _check_redis() -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except (redis.RedisError, OSError) as error:
        raise Skip(f"Redis at {REDIS_URL} is not reachable ({error}); rampgate's side of this comparison needs it")


class PerRequestDatabase:
    """The per-request approach on ``CLIENTS`` autocommit connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connections: list[Any] = []
        self.free: asyncio.Queue[Any] | None = None

    async def open(self) -> None:
        import psycopg

        self.free = asyncio.Queue()
        for _ in range(CLIENTS):
            connection = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            self.connections.append(connection)
            self.free.put_nowait(connection)

    async def decide(self, actor_type: str, actor_id: str, action: str) -> bool:
        from psycopg.types.json import Jsonb

        from rampgate.core.bucketing import is_in_cohort

        assert self.free is not None
        connection = await self.free.get()
        try:
            row = await (await connection.execute(READ_FLAG, (FLAG,))).fetchone()
            enabled, percentage, config = row if row is not None else (False, 0, {})
            trust = await (await connection.execute(READ_TRUST, (actor_type, actor_id))).fetchone()
            tier = trust[0] if trust is not None else "B"
            policy = await (await connection.execute(READ_POLICY, (tier, action))).fetchone()
            if policy is None:
                return True
            limit, window_seconds, cost_per_action = policy

            (used,) = await (
                await connection.execute(COUNT_ALLOWED, (actor_type, actor_id, action, window_seconds))
            ).fetchone()
            enforced = bool(enabled) and is_in_cohort(config.get("group") or FLAG, actor_id, percentage)
            allowed = used + cost_per_action <= limit
            await connection.execute(
                INSERT_AUDIT,
                (actor_type, actor_id, action, allowed, max(limit - used - 1, 0), cost_per_action if allowed else 0,
                 None, Jsonb({"tier": tier, "reason": "ok" if allowed else "limited"})),
            )
            return allowed or not enforced
        finally:
            self.free.put_nowait(connection)

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


async def _run_concurrently(
    decide: Callable[[str], Awaitable[bool]], actor_ids: list[str], tasks: int
) -> tuple[float, int]:
    """Decide ``actor_ids`` from ``tasks`` tasks; return the wall seconds and the number allowed."""
    shares = [actor_ids[task::tasks] for task in range(tasks)]
    allowed = 0

    async def worker(share: list[str]) -> None:
        nonlocal allowed
        for actor_id in share:
            if await decide(actor_id):
                allowed += 1

    start = perf_counter()
    await asyncio.gather(*(worker(share) for share in shares))
    return perf_counter() - start, allowed


async def _burst(decide: Callable[[str], Awaitable[bool]], actor_id: str) -> int:
    """Send ``BURST_REQUESTS`` requests of one actor at once; return how many were allowed."""
    answers = await asyncio.gather(*(decide(actor_id) for _ in range(BURST_REQUESTS)))
    return sum(answers)


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """Measure both approaches with 16 clients and the burst; return the result dict."""
    _check_redis()
    result = new_result(NAME, TITLE)
    rounds, legacy_operations, rampgate_operations = SIZES[size_of_run(quick, tiny)]
    prefix = f"rampgate-bench-{uuid.uuid4().hex[:12]}:"
    database = _create_database()
    loop = asyncio.new_event_loop()
    legacy = PerRequestDatabase(_database_url(database))
    gate: Any = None
    try:
        from rampgate.catalog.audit import AuditWriter
        from rampgate.catalog.database import create_catalog_engine, migrate
        from rampgate.core.flags import ENFORCEMENT_FLAG
        from rampgate.gate import AsyncGate

        with tempfile.TemporaryDirectory(prefix="rampgate-bench-db-") as spill_directory:
            # The catalog: rampgate's schema and seed, the flag at 100 % for both approaches.
            engine = create_catalog_engine(_database_url(database))
            migrate(engine)
            engine.dispose()
            gate = AsyncGate(
                database_url=_database_url(database), counter_store="redis", redis_url=REDIS_URL,
                redis_prefix=prefix, store_timeout_ms=2_000, watch=False, audit=False,
            )
            gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="bench")
            gate.refresh()
            writer = AuditWriter(gate.engine, spill_path=Path(spill_directory))
            writer.start()
            gate.recorder = writer
            loop.run_until_complete(legacy.open())

            legacy_ids = [f"legacy-{number % ACTORS}" for number in range(legacy_operations)]
            rampgate_ids = [f"gate-{number % ACTORS}" for number in range(rampgate_operations)]

            async def legacy_decide(actor_id: str) -> bool:
                return await legacy.decide("user", actor_id, ACTION)

            async def rampgate_decide(actor_id: str) -> bool:
                return (await gate.decide("user", actor_id, ACTION)).allowed  # type: ignore[no-any-return]

            def batch(decide: Callable[[str], Awaitable[bool]], ids: list[str]) -> Callable[[], tuple[int, float]]:
                def run_batch() -> tuple[int, float]:
                    seconds, _ = loop.run_until_complete(_run_concurrently(decide, ids, CLIENTS))
                    return len(ids), seconds

                return run_batch

            stats = measure(
                {
                    "per-request PostgreSQL (read flag, trust, policy; count; insert)": batch(legacy_decide, legacy_ids),
                    "rampgate AsyncGate.decide on Redis, audit rows by COPY": batch(rampgate_decide, rampgate_ids),
                },
                rounds=rounds,
                warmup=1,
            )

            async def legacy_burst_decide(actor_id: str) -> bool:
                return await legacy.decide("user", actor_id, BURST_ACTION)

            async def rampgate_burst_decide(actor_id: str) -> bool:
                return (await gate.decide("user", actor_id, BURST_ACTION)).allowed  # type: ignore[no-any-return]

            legacy_allowed = loop.run_until_complete(_burst(legacy_burst_decide, "burst-legacy"))
            rampgate_allowed = loop.run_until_complete(_burst(rampgate_burst_decide, "burst-rampgate"))

            loop.run_until_complete(gate.aclose())
            audit_rows = _count_audit_rows(_database_url(database))
            gate = None
    finally:
        loop.run_until_complete(legacy.close())
        if gate is not None:
            loop.run_until_complete(gate.aclose())
        loop.close()
        _drop_database(database)
        _delete_redis_prefix(prefix)

    _report(result, stats, legacy_allowed, rampgate_allowed)
    result["notes"].append(
        f"Each round decides {legacy_operations:,} requests by the per-request approach and "
        f"{rampgate_operations:,} by rampgate, from {CLIENTS} concurrent clients over {ACTORS:,} actors; {rounds} "
        "rounds after one warm-up round, timed in wall time. The burst sends 50 requests of one new actor at once "
        f"through the same {CLIENTS} connections or tasks, against the seeded tier-B {BURST_ACTION} policy "
        "(5 per 60 s)."
    )
    result["notes"].append(
        f"Audit rows in the private database at the end: {audit_rows['legacy']:,} from the per-request approach, "
        f"{audit_rows['rampgate']:,} from rampgate's writer (one per enforced decision, warm-up and burst included)."
    )
    result["data"]["audit_rows"] = audit_rows
    return result


def _count_audit_rows(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "select actor_id like 'gate-%' or actor_id = 'burst-rampgate', count(*) from rate_limit_audits group by 1"
        ).fetchall()
    counts = {"legacy": 0, "rampgate": 0}
    for is_rampgate, count in rows:
        counts["rampgate" if is_rampgate else "legacy"] = int(count)
    return counts


def _delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
    finally:
        client.close()


def _report(result: dict[str, Any], stats: dict[str, Stats], legacy_allowed: int, rampgate_allowed: int) -> None:
    names = list(stats)
    legacy, ours = names
    reference = stats[legacy].median
    rows = [
        [name, rate(figures.median), spread(figures.spread), micros(1 / figures.median), ratio(figures.median / reference)]
        for name, figures in stats.items()
    ]
    add_table(
        result, f"{CLIENTS} concurrent clients",
        ["approach", "decisions/s (median)", "spread", "per decision", "vs per-request PostgreSQL"], rows,
    )
    add_table(
        result, f"{BURST_REQUESTS} requests of one actor at once, limit {BURST_LIMIT}",
        ["approach", "allowed", "over-admitted"],
        [
            [legacy, str(legacy_allowed), str(max(legacy_allowed - BURST_LIMIT, 0))],
            [ours, str(rampgate_allowed), str(max(rampgate_allowed - BURST_LIMIT, 0))],
        ],
    )
    value = stats[ours].median / reference
    add_target(result, f"rampgate on Redis with {CLIENTS} tasks ≥ {TARGET_RATIO:g}× the per-request approach",
               ratio(value), value >= TARGET_RATIO)
    add_target(result, f"exactly {BURST_LIMIT} of {BURST_REQUESTS} simultaneous requests allowed by rampgate",
               f"{rampgate_allowed} allowed", rampgate_allowed == BURST_LIMIT)
    result["data"].update({name: figures.as_dict() for name, figures in stats.items()})
    result["data"]["burst_allowed"] = {"legacy": legacy_allowed, "rampgate": rampgate_allowed}
