"""No over-admission under concurrency: several OS processes share one Redis or PostgreSQL counter store."""

from __future__ import annotations

import time
from collections import Counter
from multiprocessing.pool import Pool
from typing import Any

import pytest
from gate_workers import fire_requests

from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.catalog.repository import Catalog
from rampgate.core.policies import Policy

pytestmark = pytest.mark.integration

# The spawn_pool fixture's processes.
PROCESSES = 4
ALGORITHMS = ("token_bucket", "gcra", "fixed_window", "sliding_window")
REDIS_URL = "redis://127.0.0.1:6379/0"
# Generous, so that queueing for the store never turns a decision into fail_open.
TIMEOUT_MS = 20_000


def prepare_catalog(database_url: str, algorithm: str, window_seconds: int) -> None:
    """Migrate, enforce for everyone and limit tier-B media_upload to 5 per window with ``algorithm``."""
    engine = create_catalog_engine(database_url)
    try:
        migrate(engine)
        catalog = Catalog(engine)
        catalog.set_flag("rate_limit_enforcement", enabled=True, percentage=100)
        catalog.set_policy(
            Policy(scope="tier", tier="B", action="media_upload", limit_value=5, window_seconds=window_seconds,
                   algorithm=algorithm)
        )
    finally:
        engine.dispose()


def fire_from_processes(
    spawn_pool: Pool, database_url: str, store_settings: dict[str, Any], actor_ids: list[str]
) -> list[tuple[str, bool, str]]:
    start_at = time.time() + 1.5
    results = spawn_pool.starmap(fire_requests, [(database_url, store_settings, actor_ids, start_at)] * PROCESSES)
    return [decision for result in results for decision in result]


def run_exactness(spawn_pool: Pool, database_url: str, store_settings: dict[str, Any], algorithm: str) -> None:
    """200 concurrent requests per process at one actor, and 2 per process at each of 1,000 others, at once.

    The window is an hour, so no unit comes back while the test runs: every
    actor must get exactly 5 of its requests through.
    """
    prepare_catalog(database_url, algorithm, 3600)
    single = f"one-{algorithm}"
    many = [f"many-{algorithm}-{number}" for number in range(1000)]

    decisions = fire_from_processes(spawn_pool, database_url, store_settings, [single] * 200 + many * 2)

    assert Counter(mode for _, _, mode in decisions) == {"enforce": PROCESSES * 2200}
    one_actor = [allowed for actor, allowed, _ in decisions if actor == single]
    assert len(one_actor) == PROCESSES * 200
    assert sum(one_actor) == 5
    allowed_per_actor = Counter(actor for actor, allowed, _ in decisions if allowed and actor != single)
    assert len(allowed_per_actor) == 1000
    assert max(allowed_per_actor.values()) == 5
    assert min(allowed_per_actor.values()) == 5


def redis_settings(prefix: str) -> dict[str, Any]:
    return {"counter_store": "redis", "redis_url": REDIS_URL, "redis_prefix": prefix, "store_timeout_ms": TIMEOUT_MS}


POSTGRES_SETTINGS = {"counter_store": "postgres", "store_timeout_ms": TIMEOUT_MS}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_redis_processes_admit_exactly_limit(spawn_pool: Pool, postgres_url: str, redis_prefix: str, algorithm: str) -> None:
    run_exactness(spawn_pool, postgres_url, redis_settings(redis_prefix), algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_postgres_processes_admit_exactly_limit(spawn_pool: Pool, postgres_url: str, algorithm: str) -> None:
    run_exactness(spawn_pool, postgres_url, POSTGRES_SETTINGS, algorithm)
