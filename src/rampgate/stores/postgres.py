"""Counters in PostgreSQL, for deployments that have a database but no Redis.

Each decision is one call of ``rampgate_consume()`` (created by migration
0002): it locks the counter's row in ``rate_limit_counters``, so concurrent
calls on one key run one after the other, and takes its time from
``clock_timestamp()``. A background thread deletes expired rows every
``prune_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from rampgate.core.algorithms import Outcome
from rampgate.errors import ConfigurationError, StoreError, StoreTimeout
from rampgate.stores.resilience import CircuitBreaker, describe_target

logger = logging.getLogger(__name__)

CONSUME_SQL = "select * from rampgate_consume(%s, %s, %s, %s, %s, %s, %s)"
PRUNE_SQL = "select rampgate_prune_counters(%s)"
MICROSECONDS = 1_000_000.0


def libpq_url(database_url: str) -> str:
    """Turn ``postgresql+psycopg://`` or ``postgres://`` into the ``postgresql://`` that libpq reads."""
    scheme, separator, rest = database_url.partition("://")
    if not separator or not scheme.startswith("postgres"):
        raise ConfigurationError("RAMPGATE_DATABASE_URL", database_url, "a postgresql://USER@HOST/DB URL")
    return "postgresql://" + rest


def _outcome(row: tuple[Any, ...]) -> Outcome:
    next_unit_after = row[4]
    return (
        row[0],
        row[1],
        row[2] / MICROSECONDS,
        row[3] / MICROSECONDS,
        None if next_unit_after < 0 else next_unit_after / MICROSECONDS,
        None,
    )


class PostgresCounterStore:
    """Counters in the ``rate_limit_counters`` table, one function call per decision.

    ``timeout_ms`` is the time budget of one call: waiting for a pooled
    connection and running the function (as the server-side
    ``statement_timeout``, which includes waiting for the row lock). A call
    that fails or exceeds it raises :class:`StoreError` or
    :class:`StoreTimeout`, and the store then fails fast for a short, growing
    interval. ``pool_size`` bounds the connections of each pool; the sync
    pool opens at once, the async pool on the first ``aconsume`` of an
    event loop.
    """

    name = "postgres"

    def __init__(
        self,
        database_url: str,
        timeout_ms: int = 50,
        *,
        pool_size: int = 10,
        prune_interval_seconds: float = 60.0,
        prune_batch: int = 10_000,
    ) -> None:
        if not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= 60_000:
            raise ConfigurationError("RAMPGATE_STORE_TIMEOUT_MS", timeout_ms, "whole milliseconds from 1 to 60000")
        if pool_size < 1:
            raise ConfigurationError("pool_size", pool_size, "at least 1")

        self.conninfo = libpq_url(database_url)
        self.timeout_ms = timeout_ms
        self.timeout_seconds = timeout_ms / 1000
        self.target = describe_target(self.conninfo)
        self.breaker = CircuitBreaker("PostgreSQL", self.target)
        self.pool_size = pool_size
        self.prune_interval_seconds = prune_interval_seconds
        self.prune_batch = prune_batch

        # statement_timeout bounds the function, lock waits included, on the server.
        self._connection_options: dict[str, Any] = {
            "autocommit": True,
            "options": f"-c statement_timeout={timeout_ms}",
            "connect_timeout": max(1, round(self.timeout_seconds + 0.5)),
        }
        self._pool = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs=self._connection_options,
            timeout=self.timeout_seconds,
            reconnect_timeout=0,
            name="rampgate-counters",
            open=False,
        )
        self._pool.open(wait=False)
        self._async_pool: AsyncConnectionPool | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

        self._stop = threading.Event()
        self._pruner = threading.Thread(target=self._prune_forever, name="rampgate-counter-pruner", daemon=True)
        self._pruner.start()

    # -- sync ----------------------------------------------------------------

    def consume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Run one algorithm transition in PostgreSQL; see :class:`rampgate.stores.base.CounterStore`."""
        return self._consume((key, algorithm, limit, window_seconds, capacity, units, None))

    def consume_at(
        self, now_us: int, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Like :meth:`consume`, at ``now_us`` (Unix microseconds) instead of ``clock_timestamp()``; for tests."""
        return self._consume((key, algorithm, limit, window_seconds, capacity, units, now_us))

    def _consume(self, parameters: tuple[Any, ...]) -> Outcome:
        if self.breaker.is_open:
            self.breaker.check()
        try:
            with self._pool.connection(timeout=self.timeout_seconds) as connection:
                row = connection.execute(CONSUME_SQL, parameters, prepare=True).fetchone()
        except (PoolTimeout, psycopg.Error) as error:
            raise self._failure(error) from error

        if self.breaker.is_open:
            self.breaker.record_success()
        assert row is not None
        return _outcome(row)

    def _failure(self, error: Exception) -> StoreError:
        """Map a pool or psycopg error to a store error; open the breaker only for outages and timeouts."""
        if isinstance(error, (PoolTimeout, psycopg.errors.QueryCanceled, TimeoutError)):
            failure: StoreError = StoreTimeout(
                f"PostgreSQL at {self.target} did not answer within {self.timeout_ms} ms"
            )
        elif isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            failure = StoreError(f"PostgreSQL at {self.target} failed: {error}")
        elif isinstance(error, psycopg.errors.UndefinedFunction):
            return StoreError(
                f"PostgreSQL at {self.target} has no rampgate_consume(): run `rampgate migrate` first",
                retryable=False,
            )
        else:
            return StoreError(f"PostgreSQL at {self.target} rejected the counter call: {error}", retryable=False)
        self.breaker.record_failure(failure)
        return failure

    def ping(self) -> None:
        """Check that PostgreSQL responds, within the time budget; raise :class:`StoreError` if not."""
        try:
            with self._pool.connection(timeout=self.timeout_seconds) as connection:
                connection.execute("select 1")
        except (PoolTimeout, psycopg.Error) as error:
            raise self._failure(error) from error

    def prune(self) -> int:
        """Delete every expired counter, in batches; return how many rows were deleted."""
        deleted = 0
        with self._pool.connection(timeout=10) as connection:
            while True:
                with connection.transaction():
                    connection.execute("set local statement_timeout = '60s'")
                    row = connection.execute(PRUNE_SQL, (self.prune_batch,)).fetchone()
                count = int(row[0]) if row else 0
                deleted += count
                if count < self.prune_batch:
                    return deleted

    def _prune_forever(self) -> None:
        while not self._stop.wait(self.prune_interval_seconds):
            try:
                deleted = self.prune()
            except (PoolTimeout, psycopg.Error) as error:
                logger.warning("store.prune_failed", extra={"store": "postgres", "target": self.target, "error": str(error)})
                continue
            if deleted:
                logger.debug("store.pruned", extra={"store": "postgres", "rows": deleted})

    def close(self) -> None:
        """Stop the pruner and close the sync pool; the async pool closes with :meth:`aclose`."""
        self._stop.set()
        self._pool.close()

    # -- async ---------------------------------------------------------------

    async def aconsume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """The asyncio twin of :meth:`consume`."""
        if self.breaker.is_open:
            self.breaker.check()
        pool = self._async_pool
        if pool is None or self._async_loop is not asyncio.get_running_loop():
            pool = await self._open_async_pool()

        parameters = (key, algorithm, limit, window_seconds, capacity, units, None)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with pool.connection() as connection:
                    cursor = await connection.execute(CONSUME_SQL, parameters, prepare=True)
                    row = await cursor.fetchone()
        except (PoolTimeout, psycopg.Error, TimeoutError) as error:
            raise self._failure(error) from error

        if self.breaker.is_open:
            self.breaker.record_success()
        assert row is not None
        return _outcome(row)

    async def aping(self) -> None:
        """Check from asyncio that PostgreSQL responds, within the time budget; raise :class:`StoreError` if not."""
        pool = self._async_pool
        if pool is None or self._async_loop is not asyncio.get_running_loop():
            pool = await self._open_async_pool()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                async with pool.connection() as connection:
                    await connection.execute("select 1")
        except (PoolTimeout, psycopg.Error, TimeoutError) as error:
            raise self._failure(error) from error

    async def _open_async_pool(self) -> AsyncConnectionPool:
        old = self._async_pool
        if old is not None and self._async_loop is asyncio.get_running_loop():
            return old
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.pool_size,
            kwargs=self._connection_options,
            timeout=self.timeout_seconds,
            reconnect_timeout=0,
            name="rampgate-counters-async",
            open=False,
        )
        await pool.open(wait=False)
        self._async_pool = pool
        self._async_loop = asyncio.get_running_loop()
        return pool

    async def aclose(self) -> None:
        """Close the async pool of the running loop, then the sync pool."""
        pool = self._async_pool
        self._async_pool = None
        self._async_loop = None
        if pool is not None:
            await pool.close()
        self.close()
