"""Counters in Redis or Redis Cluster: one Lua script per algorithm, one round trip per decision.

The scripts in ``stores/lua`` are line-by-line twins of
:mod:`rampgate.core.algorithms`. They take their time from Redis ``TIME`` in
whole microseconds, so every process shares one clock and no float drifts.
Each key is ``RAMPGATE_REDIS_PREFIX`` + :func:`counter_key`, whose
``{actor_type:actor_id}`` hash tag keeps an actor's keys on one cluster slot,
and expires when its state becomes the same as a fresh counter.

URLs: ``redis://[USER:PASSWORD@]HOST:PORT[/DB]``, ``rediss://…`` for TLS,
``unix:///PATH`` and, for Redis Cluster, ``redis+cluster://HOST:PORT[,HOST:PORT…]``
(or ``rediss+cluster://``) naming one or more startup nodes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import weakref
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import unquote

import hiredis
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from rampgate.core.algorithms import Outcome
from rampgate.errors import ConfigurationError, StoreError, StoreTimeout
from rampgate.settings import redact_url_password
from rampgate.stores.redis_pipeline import (
    ClusterRouter,
    RedisConnection,
    RedisPipeline,
    RespError,
    ServerAddress,
    pack_command,
    parse_redirection,
)
from rampgate.stores.resilience import CircuitBreaker

logger = logging.getLogger(__name__)

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCRIPT_FILES = {
    "token_bucket": "consume_tat.lua",
    "gcra": "consume_tat.lua",
    "fixed_window": "consume_fixed_window.lua",
    "sliding_window": "consume_sliding_window.lua",
}
MICROSECONDS = 1_000_000.0
MAX_REDIRECTIONS = 5
# redis-py raises RedisClusterException, which is not a RedisError, when no cluster node is reachable.
CLIENT_ERRORS = (redis.RedisError, RedisClusterException)
ASKING = pack_command("ASKING")
PING = pack_command("PING")


class Script:
    """One Lua file and its SHA1, under which ``EVALSHA`` runs it."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def load_scripts() -> dict[str, Script]:
    """Read the Lua scripts shipped with the package, keyed by algorithm."""
    by_file: dict[str, Script] = {}
    scripts: dict[str, Script] = {}
    for algorithm, file_name in SCRIPT_FILES.items():
        script = by_file.get(file_name)
        if script is None:
            source = resources.files("rampgate.stores").joinpath("lua", file_name).read_text(encoding="utf-8")
            script = by_file[file_name] = Script(file_name, source)
        scripts[algorithm] = script
    return scripts


def _parse_server_url(url: str) -> ServerAddress:
    """Parse a one-server ``redis://`` URL, raising :class:`ConfigurationError` for a port urllib rejects."""
    try:
        return ServerAddress(url)
    except ConfigurationError:
        raise
    except ValueError as error:
        # urllib raises ValueError for a port such as "notaport" or 99999.
        raise ConfigurationError(
            "RAMPGATE_REDIS_URL", redact_url_password(url), "redis://[USER:PASSWORD@]HOST:PORT[/DB] with a PORT from 1 to 65535"
        ) from error


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Split ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]`` into startup nodes and login options."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    credentials, _, hosts = netloc.rpartition("@")
    options: dict[str, Any] = {"ssl": scheme == "rediss+cluster"}
    if credentials:
        username, _, password = credentials.partition(":")
        options["username"] = unquote(username) or None
        options["password"] = unquote(password) or None

    nodes: list[tuple[str, int]] = []
    for host_port in filter(None, hosts.split(",")):
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                "RAMPGATE_REDIS_URL", url, "redis+cluster://HOST:PORT[,HOST:PORT…] with a port on every node"
            )
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ConfigurationError("RAMPGATE_REDIS_URL", url, "redis+cluster://HOST:PORT[,HOST:PORT…]")
    return nodes, options


def window_outcome(reply: list[int], limit: int, window_seconds: int, capacity: int, units: int) -> Outcome:
    """Turn a window script's reply (allowed, remaining, then durations in microseconds) into the outcome tuple."""
    next_unit_after = reply[4]
    return (
        reply[0] == 1,
        reply[1],
        reply[2] / MICROSECONDS,
        reply[3] / MICROSECONDS,
        None if next_unit_after < 0 else next_unit_after / MICROSECONDS,
        None,
    )


def tat_outcome(reply: int, limit: int, window_seconds: int, capacity: int, units: int) -> Outcome:
    """Derive the outcome tuple from the debt that ``consume_tat.lua`` returns.

    The reply is the debt (TAT - now) in ticks of 1/limit µs after an
    admitted request, or -1 - debt for a blocked one. Durations become whole
    microseconds rounded up, ``-(-ticks // limit)``, like the durations the
    window scripts return.
    """
    window_us = window_seconds * 1_000_000
    span = capacity * window_us
    if reply >= 0:
        level = span - reply
        remaining = level // window_us
        next_unit_ticks = (remaining + 1) * window_us - level
        return (
            True,
            remaining,
            -(-reply // limit) / MICROSECONDS,
            0.0,
            -(-next_unit_ticks // limit) / MICROSECONDS,
            None,
        )

    debt = -1 - reply
    level = span - debt
    remaining = max(level // window_us, 0)
    excess = debt + units * window_us - span
    next_unit_after = None
    if debt > 0:
        next_unit_after = -(-((remaining + 1) * window_us - level) // limit) / MICROSECONDS
    return (False, remaining, -(-debt // limit) / MICROSECONDS, -(-excess // limit) / MICROSECONDS, next_unit_after, None)


# The function that turns an algorithm's script reply and the policy's numbers into an outcome.
OUTCOMES: dict[str, Callable[[Any, int, int, int, int], Outcome]] = {
    "token_bucket": tat_outcome,
    "gcra": tat_outcome,
    "fixed_window": window_outcome,
    "sliding_window": window_outcome,
}
# Classes of a script's result. A reply of any other class is an error.
SCRIPT_REPLIES = (int, list)


class RedisCounterStore:
    """Counters in Redis; ``consume`` on pooled blocking connections, ``aconsume`` through a coalescing pipeline.

    ``timeout_ms`` is the time budget of one call: a call that fails or
    exceeds it raises :class:`StoreError` or :class:`StoreTimeout`, and the
    store then fails fast for a short, growing interval (see
    :mod:`rampgate.stores.resilience`). Scripts are loaded when the store
    opens and loaded again whenever Redis replies ``NOSCRIPT`` (after
    ``SCRIPT FLUSH`` or a restart).

    One store serves any number of threads and one asyncio event loop at a
    time; used from another loop it opens a new connection there. Sync calls
    to one server take an idle :class:`RedisConnection` from the store's pool,
    or open one, so each thread in a call has a connection of its own. Sync
    calls to a cluster go through redis-py's ``RedisCluster``.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "rampgate:",
        timeout_ms: int = 50,
        *,
        preload: bool = True,
    ) -> None:
        if not isinstance(timeout_ms, int) or not 1 <= timeout_ms <= 60_000:
            raise ConfigurationError("RAMPGATE_STORE_TIMEOUT_MS", timeout_ms, "whole milliseconds from 1 to 60000")
        if not prefix:
            raise ConfigurationError("RAMPGATE_REDIS_PREFIX", prefix, "a non-empty prefix such as 'rampgate:'")

        self.url = url
        self.prefix = prefix
        self.timeout_ms = timeout_ms
        self.timeout_seconds = timeout_ms / 1000
        self.is_cluster = url.split("://", 1)[0] in CLUSTER_SCHEMES
        if self.is_cluster:
            self._cluster_nodes, self._cluster_options = parse_cluster_url(url)
            self.target = ",".join(f"{host}:{port}" for host, port in self._cluster_nodes)
            self._address: ServerAddress | None = None
        else:
            self._address = _parse_server_url(url)
            self.target = self._address.target
        self.breaker = CircuitBreaker("Redis", self.target)

        self.scripts = load_scripts()
        # redis-py's cluster client, opened on first use since opening reads the slot map.
        self._cluster_client: Any = None
        # Idle sync connections to the one server. Threads share the list without
        # a lock, because list.pop and list.append are atomic under the GIL.
        self._idle: list[RedisConnection] = []
        # Packed command heads and argument tails, keyed by the call's numbers.
        self._packed: dict[tuple[str, int, int, int, int], tuple[bytes, bytes]] = {}
        self._prefix_bytes = prefix.encode()
        self._pipeline: RedisPipeline | None = None
        self._connect_task: asyncio.Task[RedisPipeline] | None = None
        self._router: ClusterRouter | None = None
        _OPEN_STORES.add(self)

        if preload:
            self._preload()

    # -- sync ----------------------------------------------------------------

    def _preload(self) -> None:
        try:
            self.load_scripts()
        except StoreError as error:
            # Not fatal: decisions fail open until Redis responds, then NOSCRIPT loads the scripts.
            self.breaker.record_failure(error)

    def _cluster(self) -> Any:
        """Return redis-py's cluster client, opening it on first use."""
        client = self._cluster_client
        if client is None:
            from redis.cluster import ClusterNode, RedisCluster

            client = self._cluster_client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self._cluster_nodes],  # type: ignore[no-untyped-call]
                **self._cluster_options,
                socket_timeout=self.timeout_seconds,
                socket_connect_timeout=self.timeout_seconds,
                health_check_interval=0,
            )
        return client

    def _checkout(self) -> RedisConnection:
        """Take an idle connection that the server has not closed, or open a new one."""
        idle = self._idle
        while idle:
            try:
                connection = idle.pop()
            except IndexError:
                break
            if connection.is_reusable:
                return connection
            connection.close()
        assert self._address is not None
        return RedisConnection(self._address, self.timeout_seconds)

    def load_scripts(self) -> None:
        """Register every script with Redis (on every primary of a cluster)."""
        if self.is_cluster:
            try:
                client = self._cluster()
                for script in self._distinct_scripts():
                    client.script_load(script.source)
            except CLIENT_ERRORS as error:
                raise self._store_error(error, "SCRIPT LOAD") from error
            return

        connection = self._checkout()
        self._load_scripts_on(connection)
        self._idle.append(connection)

    def _distinct_scripts(self) -> list[Script]:
        return list({script.sha: script for script in self.scripts.values()}.values())

    def _load_scripts_on(self, connection: RedisConnection) -> None:
        for script in self._distinct_scripts():
            reply = connection.call(pack_command("SCRIPT", "LOAD", script.source))
            if isinstance(reply, hiredis.ReplyError):
                connection.close()
                raise StoreError(f"Redis at {self.target} rejected SCRIPT LOAD of {script.name}: {reply}")

    def consume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Run one algorithm transition on Redis; see :class:`rampgate.stores.base.CounterStore`."""
        return self._consume(key, algorithm, limit, window_seconds, capacity, units, None)

    def consume_at(
        self, now_us: int, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Like :meth:`consume`, at ``now_us`` (Unix microseconds) instead of Redis ``TIME``.

        For tests that compare the scripts with their Python twins at chosen
        times; production code never passes a time.
        """
        return self._consume(key, algorithm, limit, window_seconds, capacity, units, now_us)

    def _consume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int, now_us: int | None
    ) -> Outcome:
        if self.breaker.is_open:
            self.breaker.check()

        if self.is_cluster:
            arguments: tuple[int, ...] = (limit, window_seconds, capacity, units)
            if now_us is not None:
                arguments += (now_us,)
            reply = self._cluster_evalsha(algorithm, self.prefix + key, arguments)
        else:
            if now_us is None:
                command = self._evalsha_command(key, algorithm, limit, window_seconds, capacity, units)
            else:
                command = pack_command(
                    "EVALSHA", self.scripts[algorithm].sha, 1, self.prefix + key,
                    limit, window_seconds, capacity, units, now_us,
                )
            try:
                reply = self._server_evalsha(command)
            except StoreError as error:
                self.breaker.record_failure(error)
                raise
            if reply.__class__ not in SCRIPT_REPLIES:
                script_name = self.scripts[algorithm].name
                raise StoreError(f"Redis at {self.target} rejected {script_name}: {reply}", retryable=False)

        if self.breaker.consecutive_failures:
            self.breaker.record_success()
        return OUTCOMES[algorithm](reply, limit, window_seconds, capacity, units)

    def _server_evalsha(self, command: bytes) -> Any:
        """Send one packed ``EVALSHA`` on a pooled connection, loading the scripts after ``NOSCRIPT``.

        Returns the script's reply, or the error reply as a ``hiredis.ReplyError``.
        Raises :class:`StoreError` when the connection fails, and the failed
        connection does not go back to the pool.
        """
        connection = self._checkout()
        reply = connection.call(command)
        if reply.__class__ is hiredis.ReplyError and str(reply).startswith("NOSCRIPT"):
            logger.info("store.scripts_reloaded", extra={"store": "redis", "target": self.target})
            self._load_scripts_on(connection)
            reply = connection.call(command)
        self._idle.append(connection)
        return reply

    def _cluster_evalsha(self, algorithm: str, full_key: str, arguments: tuple[int, ...]) -> Any:
        """Run one script on the cluster through redis-py, which follows ``MOVED`` and ``ASK``."""
        script = self.scripts[algorithm]
        try:
            client = self._cluster()
            try:
                return client.evalsha(script.sha, 1, full_key, *arguments)
            except redis.exceptions.NoScriptError:
                logger.info("store.scripts_reloaded", extra={"store": "redis", "target": self.target})
                for loaded in self._distinct_scripts():
                    client.script_load(loaded.source)
                return client.evalsha(script.sha, 1, full_key, *arguments)
        except redis.exceptions.ResponseError as error:
            raise StoreError(f"Redis at {self.target} rejected {script.name}: {error}", retryable=False) from error
        except CLIENT_ERRORS as error:
            failure = self._store_error(error, script.name)
            self.breaker.record_failure(failure)
            raise failure from error

    def _evalsha_command(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> bytes:
        """Pack ``EVALSHA sha 1 <prefix><key> limit window capacity units`` from cached head and tail bytes."""
        packed = self._packed.get((algorithm, limit, window_seconds, capacity, units))
        if packed is None:
            packed = self._pack_parts(algorithm, limit, window_seconds, capacity, units)
        key_bytes = self._prefix_bytes + key.encode()
        return b"%b%d\r\n%b\r\n%b" % (packed[0], len(key_bytes), key_bytes, packed[1])

    def _pack_parts(
        self, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> tuple[bytes, bytes]:
        """Pack what precedes and follows the key in ``EVALSHA sha 1 key limit window capacity units``."""
        script = self.scripts[algorithm]
        head = b"*8\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n$" % script.sha.encode()
        tail = b"".join(b"$%d\r\n%d\r\n" % (len(b"%d" % value), value) for value in (limit, window_seconds, capacity, units))
        if len(self._packed) >= 10_000:
            self._packed.clear()
        packed = self._packed[(algorithm, limit, window_seconds, capacity, units)] = (head, tail)
        return packed

    def _store_error(self, error: Exception, operation: str) -> StoreError:
        if isinstance(error, redis.TimeoutError):
            return StoreTimeout(f"Redis at {self.target} did not respond to {operation} within {self.timeout_ms} ms")
        return StoreError(f"Redis at {self.target} failed {operation}: {error}")

    def ping(self) -> None:
        """Check that Redis responds, within the time budget; raise :class:`StoreError` if not."""
        if self.is_cluster:
            try:
                self._cluster().ping()
            except CLIENT_ERRORS as error:
                raise self._store_error(error, "PING") from error
            return

        connection = self._checkout()
        reply = connection.call(PING)
        self._idle.append(connection)
        if reply != b"PONG":
            raise StoreError(f"Redis at {self.target} replied {reply!r} to PING")

    def close(self) -> None:
        """Close the idle sync connections and the cluster client.

        The async connection closes with :meth:`aclose`. A later sync call
        opens a new connection.
        """
        idle = self._idle
        while idle:
            try:
                idle.pop().close()
            except IndexError:
                break
        client = self._cluster_client
        if client is None:
            return
        try:
            client.close()
        except CLIENT_ERRORS:
            pass

    def _forget_inherited_connections(self) -> None:
        """Drop the idle connections a forked child inherited, without shutting down the parent's sockets."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # -- async ---------------------------------------------------------------

    async def aconsume(
        self, key: str, algorithm: str, limit: int, window_seconds: int, capacity: int, units: int
    ) -> Outcome:
        """Run one algorithm transition on Redis from asyncio, as :meth:`consume` does.

        Calls made in the same event-loop tick share one write to Redis (one
        write per node on a cluster).
        """
        if self.breaker.is_open:
            self.breaker.check()

        command = self._evalsha_command(key, algorithm, limit, window_seconds, capacity, units)
        if self.is_cluster:
            reply = await self._acall_cluster(self._prefix_bytes + key.encode(), command, algorithm)
        else:
            pipeline = self._pipeline
            if pipeline is None or pipeline.loop is not asyncio.get_running_loop() or not pipeline.is_connected:
                pipeline = await self._apipeline()
            try:
                reply = await pipeline.call(command)
            except StoreError as error:
                self.breaker.record_failure(error)
                raise
            if reply.__class__ not in SCRIPT_REPLIES:
                reply = await self._aretry(pipeline, command, reply, algorithm)

        if self.breaker.consecutive_failures:
            self.breaker.record_success()
        return OUTCOMES[algorithm](reply, limit, window_seconds, capacity, units)

    async def _aretry(self, pipeline: RedisPipeline, command: bytes, reply: Any, algorithm: str) -> Any:
        """Handle a reply that is not the script's result: load the scripts after NOSCRIPT and retry once."""
        script = self.scripts[algorithm]
        if isinstance(reply, RespError) and reply.message.startswith("NOSCRIPT"):
            logger.info("store.scripts_reloaded", extra={"store": "redis", "target": self.target})
            try:
                for loaded in self._distinct_scripts():
                    answer = await pipeline.call(pack_command("SCRIPT", "LOAD", loaded.source))
                    if isinstance(answer, RespError):
                        raise StoreError(f"Redis at {self.target} rejected SCRIPT LOAD: {answer.message}")
                reply = await pipeline.call(command)
            except StoreError as error:
                self.breaker.record_failure(error)
                raise
        if reply.__class__ in SCRIPT_REPLIES:
            return reply
        detail = reply.message if isinstance(reply, RespError) else repr(reply)
        raise StoreError(f"Redis at {self.target} rejected {script.name}: {detail}", retryable=False)

    async def _apipeline(self) -> RedisPipeline:
        """Return the connected pipeline of the running loop, connecting once for all waiting calls."""
        loop = asyncio.get_running_loop()
        task = self._connect_task
        if task is None or task.get_loop() is not loop or (
            task.done() and (task.cancelled() or task.exception() is not None or not task.result().is_connected)
        ):
            task = loop.create_task(self._open_pipeline())
            self._connect_task = task
        try:
            return await asyncio.shield(task)
        except StoreError as error:
            self.breaker.record_failure(error)
            raise

    async def _open_pipeline(self) -> RedisPipeline:
        assert self._address is not None
        old = self._pipeline
        if old is not None and old.loop is asyncio.get_running_loop():
            old.close()
        pipeline = RedisPipeline(self._address, self.timeout_seconds)
        await pipeline.connect()
        self._pipeline = pipeline
        return pipeline

    def _cluster_router(self) -> ClusterRouter:
        """Return the cluster router of the running event loop, creating it on first use."""
        router = self._router
        if router is None or router.loop is not asyncio.get_running_loop():
            router = self._router = ClusterRouter(
                self._cluster_nodes,
                username=self._cluster_options.get("username"),
                password=self._cluster_options.get("password"),
                use_tls=self._cluster_options["ssl"],
                timeout_seconds=self.timeout_seconds,
            )
        return router

    async def _acall_cluster(self, key_bytes: bytes, command: bytes, algorithm: str) -> Any:
        """Send one command to the primary of its key's slot, following MOVED and ASK redirections."""
        router = self._cluster_router()
        slot = key_slot(key_bytes)
        try:
            for _ in range(MAX_REDIRECTIONS):
                pipeline = await router.pipeline_for_slot(slot)
                reply = await pipeline.call(command)
                if reply.__class__ in SCRIPT_REPLIES:
                    return reply
                redirection = parse_redirection(reply.message) if isinstance(reply, RespError) else None
                if redirection is None:
                    return await self._aretry(pipeline, command, reply, algorithm)

                kind, moved_slot, node = redirection
                if kind == "MOVED":
                    router.moved(moved_slot, node)
                    continue
                # ASK: this one command goes to the importing node, preceded by ASKING.
                target = await router.pipeline(node)
                asking = target.call(ASKING)
                reply = await target.call(command)
                await asking
                if reply.__class__ in SCRIPT_REPLIES:
                    return reply
                return await self._aretry(target, command, reply, algorithm)
        except StoreError as error:
            router.needs_refresh = True
            self.breaker.record_failure(error)
            raise
        raise StoreError(f"Redis Cluster at {self.target} redirected slot {slot} more than {MAX_REDIRECTIONS} times")

    async def aping(self) -> None:
        """Check from asyncio that Redis (every primary of a cluster) responds; raise :class:`StoreError` if not."""
        if self.is_cluster:
            router = self._cluster_router()
            await router.refresh()
            pipelines = [await router.pipeline(node) for node in router.primaries()]
        else:
            pipeline = self._pipeline
            if pipeline is None or pipeline.loop is not asyncio.get_running_loop() or not pipeline.is_connected:
                pipeline = await self._apipeline()
            pipelines = [pipeline]
        for pipeline in pipelines:
            reply = await pipeline.call(PING)
            if reply != "PONG":
                raise StoreError(f"Redis at {pipeline.address.target} replied {reply!r} to PING")

    async def aclose(self) -> None:
        """Close the async connection of the running loop and the sync connections."""
        pipeline = self._pipeline
        self._pipeline = None
        self._connect_task = None
        if pipeline is not None:
            pipeline.close()
        router = self._router
        self._router = None
        if router is not None:
            router.close()
        self.close()


# Stores whose idle sync connections a forked child must not share with its parent.
_OPEN_STORES: weakref.WeakSet[RedisCounterStore] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for store in list(_OPEN_STORES):
        store._forget_inherited_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections_after_fork)
