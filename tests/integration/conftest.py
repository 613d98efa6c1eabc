"""Fixtures of the integration tests: private servers and a pool of spawned worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.pool import Pool

import pytest
from servers import private_postgres, private_redis, redis_cluster

__all__ = ["private_postgres", "private_redis", "redis_cluster", "spawn_pool"]

SPAWNED_WORKERS = 4


@pytest.fixture(scope="module")
def spawn_pool() -> Iterator[Pool]:
    """Four OS processes started with spawn, each importing only rampgate and the test helpers."""
    with multiprocessing.get_context("spawn").Pool(SPAWNED_WORKERS) as workers:
        yield workers
