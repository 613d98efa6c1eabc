"""Opens the counter store that the settings name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rampgate.errors import ConfigurationError
from rampgate.settings import Settings
from rampgate.stores.memory import MemoryCounterStore


def open_counter_store(settings: Settings, clock: Callable[[], float] | None = None) -> Any:
    """Return a store for ``settings.counter_store``: memory, redis or postgres.

    The memory store takes ``clock``; Redis and PostgreSQL use their server's
    clock. ``RAMPGATE_REDIS_URL`` selects Redis Cluster with the scheme
    ``redis+cluster://HOST:PORT[,HOST:PORT…]``. The PostgreSQL store keeps its
    counters in the catalog database, which ``rampgate migrate`` prepares.
    """
    kind = settings.counter_store
    if kind == "memory":
        return MemoryCounterStore(clock=clock)
    if kind == "redis":
        from rampgate.stores.redis import RedisCounterStore

        return RedisCounterStore(settings.redis_url, prefix=settings.redis_prefix, timeout_ms=settings.store_timeout_ms)
    if kind == "postgres":
        from rampgate.stores.postgres import PostgresCounterStore

        if not settings.database_url.startswith(("postgresql", "postgres:")):
            raise ConfigurationError(
                "RAMPGATE_DATABASE_URL", settings.database_url,
                "a postgresql:// URL when RAMPGATE_COUNTER_STORE is postgres",
            )
        return PostgresCounterStore(settings.database_url, timeout_ms=settings.store_timeout_ms)
    raise ConfigurationError("RAMPGATE_COUNTER_STORE", kind, "memory, redis or postgres")
