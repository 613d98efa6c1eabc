"""Counters in PostgreSQL, for deployments that have a database but no Redis.

A decision is one call of ``rampgate_consume()`` (created by migration
0002): it locks the counter's row in ``rate_limit_counters``, so concurrent
calls on one key run one after the other, and takes its time from
``clock_timestamp()``.

Calls on one key are coalesced within a process. While one call for a key
is in flight, later calls for that key wait in the process, then go together
as one call of ``rampgate_consume_batch()`` (migration 0003), which applies
them in arrival order under one row lock. A burst on one key therefore costs
at most one transaction per process at a time instead of a queue of lock
waits that outlasts the time budget. A background thread deletes expired
rows every ``prune_interval_seconds``.

Every new pooled connection runs each algorithm once, in a transaction that
is rolled back, before it serves a call. The first statement of a session
compiles the PL/pgSQL functions and loads the catalog caches. Under
``rampgate serve --workers 2`` on the loaded 2-core development machine, that
first statement took 7 to 40 ms in a few runs, most of the default budget.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from rampgate.core.algorithms import Outcome
from rampgate.core.policies import ALGORITHMS
from rampgate.errors import ConfigurationError, StoreError, StoreTimeout
from rampgate.stores.resilience import CircuitBreaker, SentRequest, await_reply, describe_target

logger = logging.getLogger(__name__)

CONSUME_SQL = "select * from rampgate_consume(%s, %s, %s, %s, %s, %s, %s)"
CONSUME_BATCH_SQL = (
    "select * from rampgate_consume_batch(%s, %s, %s, %s, %s, %s::bigint[], %s) order by request_index"
)
PRUNE_SQL = "select rampgate_prune_counters(%s)"
MICROSECONDS = 1_000_000.0

# The warm-up of a new connection runs on the server under this limit instead
# of the budget, since compiling the functions is slower than using them.
WARM_UP_STATEMENT_TIMEOUT = "10s"
# How long :meth:`PostgresCounterStore.awarm` waits for a warm connection by default.
WARM_UP_TIMEOUT_SECONDS = 5.0

# A batch runs under one statement_timeout, so its size is capped to stay well
# inside the default 50 ms budget. On the 2-core development machine
# (PostgreSQL 15, load average 3), a batch of 32 requests took 1 to 12 ms. A
# batch of 100 took 2 to 15 ms, but up to 51 ms while other processes loaded
# the same server. These are a few runs, not a benchmark.
MAX_BATCH_SIZE = 32

# The arguments that requests must share to go in one batch:
# (key, algorithm, limit, window_seconds, capacity).
BatchKey = tuple[str, str, int, int, int]


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


def _batch_statement(batch_key: BatchKey, units: list[int], now_us: int | None) -> tuple[str, tuple[Any, ...]]:
    """Return the SQL and parameters for ``units``: ``rampgate_consume`` for one request, the batch function for more."""
    if len(units) == 1:
        return CONSUME_SQL, (*batch_key, units[0], now_us)
    return CONSUME_BATCH_SQL, (*batch_key, units, now_us)


def _batch_outcomes(rows: list[tuple[Any, ...]], units: list[int]) -> list[Outcome]:
    """Turn the rows of :func:`_batch_statement`'s call into one outcome per request, in request order."""
    if len(units) == 1:
        return [_outcome(rows[0])]
    if len(rows) != len(units):
        raise StoreError(
            f"rampgate_consume_batch() returned {len(rows)} rows for {len(units)} requests", retryable=False
        )
    return [_outcome(row[1:]) for row in rows]


def _warm_up_statements(backend_pid: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Return the calls that warm a new session: every algorithm as a batch, then one single call.

    They run in a transaction that is rolled back, so they change no counter.
    The rollback also makes psycopg forget its prepared statements, so the
    first real call of each statement still prepares it, which costs a
    fraction of a millisecond.
    """
    # Each algorithm stores its state in another shape, so each gets its own key, as real keys do.
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (CONSUME_BATCH_SQL, (f"{algorithm}:warm-up:{backend_pid}", algorithm, 1, 1, 1, [1, 1], None))
        for algorithm in ALGORITHMS
    ]
    statements.append((CONSUME_SQL, (f"{ALGORITHMS[0]}:warm-up:{backend_pid}", ALGORITHMS[0], 1, 1, 1, 1, None)))
    return statements


def _warm_connection(connection: psycopg.Connection[Any]) -> None:
    """Compile the counter functions in a new pooled session (the sync pool's ``configure``).

    A failure is logged and the connection still joins the pool, so that a
    call on it reports the cause, such as a database that was never migrated.
    """
    try:
        with connection.transaction(force_rollback=True):
            connection.execute(f"set local statement_timeout = '{WARM_UP_STATEMENT_TIMEOUT}'")
            for statement, parameters in _warm_up_statements(connection.info.backend_pid):
                connection.execute(statement, parameters)
    except psycopg.Error as error:
        _log_warm_up_failure(connection.info.backend_pid, error)


async def _awarm_connection(connection: psycopg.AsyncConnection[Any]) -> None:
    """Compile the counter functions in a new pooled session (the async pool's ``configure``); see :func:`_warm_connection`."""
    try:
        async with connection.transaction(force_rollback=True):
            await connection.execute(f"set local statement_timeout = '{WARM_UP_STATEMENT_TIMEOUT}'")
            for statement, parameters in _warm_up_statements(connection.info.backend_pid):
                await connection.execute(statement, parameters)
    except psycopg.Error as error:
        _log_warm_up_failure(connection.info.backend_pid, error)


async def _aexecute(
    pool: AsyncConnectionPool, request: SentRequest, statement: str, parameters: tuple[Any, ...]
) -> list[Any]:
    """Run ``statement`` on a connection of ``pool``, marking ``request`` sent just before it goes out."""
    async with pool.connection() as connection:
        request.mark_sent(connection.pgconn.socket)
        cursor = await connection.execute(statement, parameters, prepare=True)
        return await cursor.fetchall()


def _log_warm_up_failure(backend_pid: int, error: psycopg.Error) -> None:
    logger.warning(
        "store.warm_up_failed",
        extra={"store": "postgres", "backend_pid": backend_pid, "error": f"{type(error).__name__}: {error}"},
    )


class _SyncRequest:
    """One thread's request waiting in a :class:`_SyncLane`, and its outcome or error once its batch ran."""

    __slots__ = ("done", "error", "outcome", "units")

    def __init__(self, units: int) -> None:
        self.units = units
        self.done = False
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None

    def result(self) -> Outcome:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


class _SyncLane:
    """The requests from threads for one batch key: those not yet sent, and whether a thread is sending a batch."""

    __slots__ = ("busy", "condition", "waiting")

    def __init__(self, lock: threading.Lock) -> None:
        self.condition = threading.Condition(lock)
        self.waiting: list[_SyncRequest] = []
        self.busy = False


class PostgresCounterStore:
    """Counters in the ``rate_limit_counters`` table, one function call per decision or per batch.

    ``timeout_ms`` is the time budget of one call, which carries one request
    or a batch of up to :data:`MAX_BATCH_SIZE` requests for one key. Waiting
    for a pooled connection has one budget, and running the function has
    another: the server-side ``statement_timeout``, which includes waiting
    for the row lock, and, for async calls, a client-side deadline counted
    from when the statement is sent. A call that fails or exceeds its budget
    raises :class:`StoreError` or :class:`StoreTimeout` in every request it
    carries. The store's :class:`CircuitBreaker` then makes calls fail fast
    for a short, growing interval, after an error at once and after a few
    timeouts in a row. While it is open, the requests queued behind a call
    fail at once too. ``pool_size`` bounds the connections
    of each pool. The sync pool opens at once. The async pool opens on the
    first call of an event loop, or in :meth:`awarm`.

    NOTE: the wait in the process queue has no budget of its own. A request
    waits for every batch ahead of it on its key, so under a burst of
    thousands for one key it can take many budgets before it is decided.
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
            configure=_warm_connection,
            open=False,
        )
        self._pool.open(wait=False)
        self._async_pool: AsyncConnectionPool | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

        # Requests queued behind an in-flight call, per batch key: one lock for
        # every sync lane, and per event loop a list of (units, future).
        self._sync_lanes_lock = threading.Lock()
        self._sync_lanes: dict[BatchKey, _SyncLane] = {}
        self._async_lanes: dict[BatchKey, list[tuple[int, asyncio.Future[Outcome]]]] = {}
        self._drain_tasks: set[asyncio.Task[None]] = set()
        self._call_tasks: set[asyncio.Task[list[Any]]] = set()

        self._stop = threading.Event()
        self._pruner = threading.Thread(target=self._prune_forever, name="rampgate-counter-pruner", daemon=True)
        self._pruner.start()

    # -- sync ----------------------------------------------------------------

    def consume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Run one algorithm transition in PostgreSQL; see :class:`rampgate.stores.base.CounterStore`.

        Threads that call this for the same key take turns. The thread whose
        turn it is sends the requests waiting for the key at that moment (up
        to :data:`MAX_BATCH_SIZE`) as one batch and hands each thread its
        outcome.
        """
        if self.breaker.is_open:
            self.breaker.check()
        batch_key = (key, algorithm, limit, window_seconds, capacity)
        request = _SyncRequest(units)

        with self._sync_lanes_lock:
            lane = self._sync_lanes.get(batch_key)
            if lane is None:
                lane = self._sync_lanes[batch_key] = _SyncLane(self._sync_lanes_lock)
            lane.waiting.append(request)

        while True:
            with self._sync_lanes_lock:
                while lane.busy and not request.done:
                    lane.condition.wait()
                if request.done:
                    return request.result()
                lane.busy = True
                batch = lane.waiting[:MAX_BATCH_SIZE]
                del lane.waiting[:MAX_BATCH_SIZE]

            self._send_sync_batch(batch_key, lane, batch)

    def _send_sync_batch(self, batch_key: BatchKey, lane: _SyncLane, batch: list[_SyncRequest]) -> None:
        """Send ``batch``, store each request's outcome or error, and pass the lane's turn on."""
        outcomes: list[Outcome] = []
        failure: BaseException | None = None
        try:
            if self.breaker.is_open:
                self.breaker.check()
            outcomes = self._consume_batch(batch_key, [request.units for request in batch])
        except Exception as error:  # noqa: BLE001 - it is handed to every request of the batch
            failure = error
        finally:
            if not outcomes and failure is None:
                # A BaseException such as KeyboardInterrupt is on its way up in this thread.
                failure = StoreError(f"the batch for {batch_key[0]} was interrupted before PostgreSQL returned its outcomes")
            with self._sync_lanes_lock:
                for position, request in enumerate(batch):
                    if failure is None:
                        request.outcome = outcomes[position]
                    else:
                        request.error = failure
                    request.done = True
                lane.busy = False
                if not lane.waiting and self._sync_lanes.get(batch_key) is lane:
                    del self._sync_lanes[batch_key]
                lane.condition.notify_all()

    def consume_at(
        self, now_us: int, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Like :meth:`consume`, at ``now_us`` (Unix microseconds) instead of ``clock_timestamp()``; for tests.

        It is never coalesced with other calls.
        """
        if self.breaker.is_open:
            self.breaker.check()
        return self._consume_batch((key, algorithm, limit, window_seconds, capacity), [units], now_us)[0]

    def _consume_batch(self, batch_key: BatchKey, units: list[int], now_us: int | None = None) -> list[Outcome]:
        """Apply ``units`` in order to one counter in one call; return one outcome per request."""
        statement, parameters = _batch_statement(batch_key, units, now_us)
        try:
            with self._pool.connection(timeout=self.timeout_seconds) as connection:
                rows = connection.execute(statement, parameters, prepare=True).fetchall()
        except (PoolTimeout, psycopg.Error) as error:
            raise self._failure(error) from error

        if self.breaker.consecutive_failures:
            self.breaker.record_success()
        return _batch_outcomes(rows, units)

    def _failure(self, error: Exception) -> StoreError:
        """Map a pool or psycopg error to a store error; open the breaker only for outages and timeouts."""
        if isinstance(error, (PoolTimeout, psycopg.errors.QueryCanceled, TimeoutError)):
            failure: StoreError = StoreTimeout(
                f"PostgreSQL at {self.target} did not respond within {self.timeout_ms} ms"
            )
        elif isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)):
            failure = StoreError(f"PostgreSQL at {self.target} failed: {error}")
        elif isinstance(error, psycopg.errors.UndefinedFunction):
            return StoreError(
                f"PostgreSQL at {self.target} has no rampgate_consume() or rampgate_consume_batch(): "
                "run `rampgate migrate` first",
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
        """The asyncio twin of :meth:`consume`.

        The first call for a key is sent at once. Calls for that key made
        while it is in flight wait for it, then a background task sends them
        in batches of up to :data:`MAX_BATCH_SIZE`.
        """
        if self.breaker.is_open:
            self.breaker.check()
        pool = self._async_pool
        if pool is None or self._async_loop is not asyncio.get_running_loop():
            pool = await self._open_async_pool()

        lanes = self._async_lanes
        batch_key = (key, algorithm, limit, window_seconds, capacity)
        waiting = lanes.get(batch_key)
        if waiting is not None:
            future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            waiting.append((units, future))
            return await future

        lanes[batch_key] = waiting = []
        try:
            return (await self._aconsume_batch(pool, batch_key, [units]))[0]
        finally:
            if waiting:
                task = asyncio.get_running_loop().create_task(self._drain_async_lane(pool, lanes, batch_key, waiting))
                self._drain_tasks.add(task)
                task.add_done_callback(self._drain_tasks.discard)
            else:
                del lanes[batch_key]

    async def _drain_async_lane(
        self,
        pool: AsyncConnectionPool,
        lanes: dict[BatchKey, list[tuple[int, asyncio.Future[Outcome]]]],
        batch_key: BatchKey,
        waiting: list[tuple[int, asyncio.Future[Outcome]]],
    ) -> None:
        """Send the requests queued for ``batch_key`` in batches until none are left, then close the lane."""
        batch: list[tuple[int, asyncio.Future[Outcome]]] = []
        try:
            while waiting:
                # A caller that was cancelled while it waited is left out, so its units are not consumed.
                batch = [(units, future) for units, future in waiting[:MAX_BATCH_SIZE] if not future.done()]
                del waiting[:MAX_BATCH_SIZE]
                if not batch:
                    continue

                try:
                    if self.breaker.is_open:
                        self.breaker.check()
                    outcomes = await self._aconsume_batch(pool, batch_key, [units for units, _ in batch])
                except Exception as error:  # noqa: BLE001 - it is handed to every request of the batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue

                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            # Only a cancelled task (the event loop shutting down) leaves futures pending here.
            for _, future in [*batch, *waiting]:
                future.cancel()
            if lanes.get(batch_key) is waiting:
                del lanes[batch_key]

    async def _aconsume_batch(self, pool: AsyncConnectionPool, batch_key: BatchKey, units: list[int]) -> list[Outcome]:
        """Apply ``units`` in order to one counter in one call from asyncio; return one outcome per request."""
        statement, parameters = _batch_statement(batch_key, units, None)
        rows = await self._acall(pool, statement, parameters)
        return _batch_outcomes(rows, units)

    async def _acall(self, pool: AsyncConnectionPool, statement: str, parameters: tuple[Any, ...]) -> list[Any]:
        """Run one statement on a pooled connection within the time budget; return its rows.

        Waiting for a pooled connection has the budget as the pool's timeout.
        The statement has it twice: as ``statement_timeout`` on the server,
        and in :func:`await_reply`, which counts from the moment the statement
        is sent and does not count the time this event loop was late to read
        the reply. The statement runs in a task of its own, so a timed-out
        call returns at once while psycopg cancels the query in the background.
        """
        request = SentRequest()
        task = asyncio.get_running_loop().create_task(_aexecute(pool, request, statement, parameters))
        # A timed-out task goes on cancelling its query; this set keeps it alive until it ends.
        self._call_tasks.add(task)
        task.add_done_callback(self._forget_call_task)
        try:
            rows = await await_reply(task, request, self.timeout_seconds)
        except (PoolTimeout, psycopg.Error, TimeoutError) as error:
            raise self._failure(error) from error

        if self.breaker.consecutive_failures:
            self.breaker.record_success()
        return rows

    def _forget_call_task(self, task: asyncio.Task[list[Any]]) -> None:
        self._call_tasks.discard(task)
        if not task.cancelled():
            # Mark the error of an abandoned call as retrieved; _acall has already reported it.
            task.exception()

    async def aping(self) -> None:
        """Check from asyncio that PostgreSQL responds, within the time budget; raise :class:`StoreError` if not."""
        pool = self._async_pool
        if pool is None or self._async_loop is not asyncio.get_running_loop():
            pool = await self._open_async_pool()
        await self._acall(pool, "select 1", ())

    async def awarm(self, timeout_seconds: float = WARM_UP_TIMEOUT_SECONDS) -> None:
        """Open the async pool on the running event loop and wait until a warm connection is ready.

        A service calls this at startup, so that no decision waits for a
        connection to open or for the functions to compile. Raise
        :class:`StoreError` when no connection is ready within
        ``timeout_seconds``. Later calls then make the pool try again, and
        fail open until a connection is ready.
        """
        pool = self._async_pool
        if pool is None or self._async_loop is not asyncio.get_running_loop():
            pool = await self._open_async_pool()
        try:
            async with pool.connection(timeout=timeout_seconds) as connection:
                await connection.execute("select 1")
        except (PoolTimeout, psycopg.Error) as error:
            raise StoreError(
                f"PostgreSQL at {self.target} had no connection ready within {timeout_seconds:g} s: {error}"
            ) from error

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
            configure=_awarm_connection,
            open=False,
        )
        await pool.open(wait=False)
        self._async_pool = pool
        self._async_loop = asyncio.get_running_loop()
        self._async_lanes = {}
        return pool

    async def aclose(self) -> None:
        """Close the async pool of the running loop, then the sync pool."""
        pool = self._async_pool
        self._async_pool = None
        self._async_loop = None
        if pool is not None:
            await pool.close()
        self.close()
