"""Hand-written RESP2 connections to Redis: a coalescing asyncio pipeline and a blocking connection.

:class:`RedisPipeline` packs every call made during one pass of the event
loop into a single write, and reads the replies in order as they arrive, so
64 concurrent decisions cost one round trip instead of 64. Batches are
pipelined too: a new batch goes out without waiting for the replies of the
previous one. It speaks RESP2 over an :class:`asyncio.Protocol` instead of
going through redis-py's asyncio client, because that client spends several
coroutine switches per reply. Here a reply is parsed in ``data_received`` and
resolves its future at once.

:class:`RedisConnection` serves sync calls: the caller sends bytes it packed
itself and hiredis parses the reply. That skips redis-py's connection pool,
argument encoding and response callbacks, which cost more client CPU than
the round trip itself.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import ssl
import struct
import sys
from collections import deque
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import hiredis

from rampgate.errors import ConfigurationError, StoreError, StoreTimeout
from rampgate.stores.resilience import has_unread_data

logger = logging.getLogger(__name__)

CRLF = b"\r\n"


class RespError:
    """An error reply from Redis, such as ``NOSCRIPT No matching script``."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"RespError({self.message!r})"


class ProtocolError(Exception):
    """The server sent bytes that are not RESP2."""


def pack_command(*parts: bytes | str | int) -> bytes:
    """Encode one command as a RESP2 array of bulk strings."""
    encoded = [part if isinstance(part, bytes) else str(part).encode() for part in parts]
    chunks = [b"*%d\r\n" % len(encoded)]
    for part in encoded:
        chunks.append(b"$%d\r\n%b\r\n" % (len(part), part))
    return b"".join(chunks)


class RespParser:
    """Incremental RESP2 parser: ``feed`` bytes, get back the replies completed by them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        replies: list[Any] = []
        position = 0
        size = len(buffer)
        while position < size:
            try:
                reply, position_after = self._parse(buffer, position)
            except IndexError:
                break
            replies.append(reply)
            position = position_after
        if position:
            del buffer[:position]
        return replies

    def _parse(self, buffer: bytearray, position: int) -> tuple[Any, int]:
        """Parse one reply at ``position``; raise IndexError when it is not complete yet."""
        end = buffer.find(CRLF, position)
        if end < 0:
            raise IndexError(position)
        kind = buffer[position]
        line = buffer[position + 1 : end]
        after = end + 2

        if kind == 58:  # ':' integer
            return int(line), after
        if kind == 42:  # '*' array
            count = int(line)
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                item, after = self._parse(buffer, after)
                items.append(item)
            return items, after
        if kind == 36:  # '$' bulk string
            length = int(line)
            if length < 0:
                return None, after
            if len(buffer) < after + length + 2:
                raise IndexError(position)
            return bytes(buffer[after : after + length]), after + length + 2
        if kind == 43:  # '+' simple string
            return line.decode(), after
        if kind == 45:  # '-' error
            return RespError(line.decode(errors="replace")), after
        raise ProtocolError(f"unexpected RESP type byte {kind!r}")


class _Protocol(asyncio.Protocol):
    """Resolves the oldest waiting future with each reply, in order."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.parser = RespParser()
        self.lost: StoreError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.parser.feed(data)
        except (ProtocolError, ValueError) as error:
            logger.error("store.protocol_error", extra={"target": self.target, "error": str(error)})
            if self.transport is not None:
                self.transport.abort()
            return
        waiters = self.waiters
        for reply in replies:
            if not waiters:
                break
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self.lost = StoreError(f"connection to Redis at {self.target} was closed{reason}")
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)


class ServerAddress:
    """The address and login of one Redis server, parsed from a ``redis://`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                "RAMPGATE_REDIS_URL", url, "redis://[USER:PASSWORD@]HOST:PORT[/DB], rediss://… or unix:///PATH"
            )
        self.use_tls = parts.scheme == "rediss"
        self.path = parts.path if parts.scheme == "unix" else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.db = 0
        if parts.scheme != "unix" and parts.path.strip("/"):
            database = parts.path.strip("/")
            if not database.isdigit():
                raise ConfigurationError("RAMPGATE_REDIS_URL", url, "a database number after the port, such as /0")
            self.db = int(database)
        for option in filter(None, parts.query.split("&")):
            name, _, value = option.partition("=")
            if name == "db" and value.isdigit():
                self.db = int(value)

    @property
    def target(self) -> str:
        """``host:port`` or the socket path, for messages; never the credentials."""
        return self.path or f"{self.host}:{self.port}"


def address_setup_commands(address: ServerAddress) -> list[tuple[str, bytes]]:
    """Return the packed ``AUTH`` and ``SELECT`` a new connection to ``address`` needs, with their names."""
    commands = []
    if address.password is not None:
        if address.username:
            commands.append(("AUTH", pack_command("AUTH", address.username, address.password)))
        else:
            commands.append(("AUTH", pack_command("AUTH", address.password)))
    if address.db:
        commands.append(("SELECT", pack_command("SELECT", address.db)))
    return commands


class RedisPipeline:
    """One connection, bound to the event loop that opened it, that sends each tick's calls as one write.

    ``timeout_seconds`` bounds every call: a call whose reply has not arrived
    within it fails with :class:`StoreTimeout`, and the connection is dropped,
    since every later reply queues behind the missing one.
    """

    def __init__(self, address: ServerAddress, timeout_seconds: float) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self.loop = asyncio.get_running_loop()
        self._protocol: _Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._pending_futures: list[asyncio.Future[Any]] = []
        self._flush_scheduled = False

    @property
    def is_connected(self) -> bool:
        protocol = self._protocol
        return self._transport is not None and protocol is not None and protocol.lost is None

    async def connect(self) -> None:
        """Open the connection, log in and select the database, all within the time budget."""
        address = self.address
        protocol = _Protocol(address.target)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                if address.path is not None:
                    transport, _ = await self.loop.create_unix_connection(lambda: protocol, address.path)
                else:
                    context = ssl.create_default_context() if address.use_tls else None
                    transport, _ = await self.loop.create_connection(
                        lambda: protocol, address.host, address.port, ssl=context
                    )
                self._protocol = protocol
                self._transport = transport
                await self._handshake()
        except TimeoutError as error:
            self.close()
            raise StoreTimeout(
                f"connecting to Redis at {address.target} took longer than {self.timeout_seconds * 1000:.0f} ms"
            ) from error
        except OSError as error:
            self.close()
            raise StoreError(f"cannot connect to Redis at {address.target}: {error}") from error
        except StoreError:
            # AUTH or SELECT was rejected, or the connection dropped during them.
            self.close()
            raise

    async def _handshake(self) -> None:
        for name, command in address_setup_commands(self.address):
            self._check_reply(await self.call(command), name)

    def _check_reply(self, reply: Any, command: str) -> None:
        if isinstance(reply, RespError):
            raise StoreError(f"Redis at {self.address.target} rejected {command}: {reply.message}", retryable=False)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """Queue one packed command for this tick's write; return the future of its reply."""
        future = self.loop.create_future()
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            future.set_exception(
                protocol.lost if protocol is not None and protocol.lost is not None
                else StoreError(f"no connection to Redis at {self.address.target}")
            )
            return future
        self._pending.append(command)
        self._pending_futures.append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        commands = self._pending
        futures = self._pending_futures
        self._pending = []
        self._pending_futures = []

        protocol = self._protocol
        transport = self._transport
        if protocol is None or transport is None or protocol.lost is not None:
            error = (protocol.lost if protocol is not None else None) or StoreError(
                f"no connection to Redis at {self.address.target}"
            )
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return

        protocol.waiters.extend(futures)
        transport.write(commands[0] if len(commands) == 1 else b"".join(commands))
        # One timer per batch rather than per call.
        self.loop.call_later(self.timeout_seconds, self._expire, futures, False)

    def _expire(self, futures: list[asyncio.Future[Any]], extended: bool) -> None:
        if not extended and any(not future.done() for future in futures) and self._has_unread_reply():
            # The replies came in time and only this loop was late to read them
            # (uvloop runs due timers before it reads sockets): one more budget.
            self.loop.call_later(self.timeout_seconds, self._expire, futures, True)
            return

        expired = False
        for future in futures:
            if not future.done():
                future.set_exception(
                    StoreTimeout(
                        f"Redis at {self.address.target} did not respond within "
                        f"{self.timeout_seconds * 1000:.0f} ms"
                    )
                )
                expired = True
        if expired:
            # The missing reply would hold up every later one.
            self.close()

    def _has_unread_reply(self) -> bool:
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return sock is not None and has_unread_data(sock.fileno())

    def close(self) -> None:
        transport = self._transport
        self._transport = None
        if transport is not None and not self.loop.is_closed():
            transport.abort()
        elif self._protocol is not None and self._protocol.lost is None:
            self._protocol.connection_lost(None)


# Errors of a send or receive that ran out of time: socket.timeout (an alias
# of TimeoutError) under a Python timeout, EAGAIN under SO_RCVTIMEO and
# SO_SNDTIMEO, which the ssl module reports as SSLWantReadError or
# SSLWantWriteError on a TLS socket.
SOCKET_TIMEOUTS = (TimeoutError, BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
RECEIVE_BYTES = 65536
# On Linux the kernel bounds each send and receive (SO_SNDTIMEO, SO_RCVTIMEO)
# on a blocking socket. A Python socket timeout would poll the socket before
# every receive, one more system call per reply.
KERNEL_TIMEOUTS = sys.platform.startswith("linux")


class RedisConnection:
    """One blocking connection to one Redis server: the caller packs each command and hiredis parses the reply.

    ``timeout_seconds`` bounds the connect and every send and receive, as
    redis-py's ``socket_timeout`` does. A reply arrives in one receive unless
    it is larger than the socket buffer. A call that fails or times out
    raises :class:`StoreError` or :class:`StoreTimeout` and closes the
    connection, since a late reply would otherwise be read as the answer to
    the next call. One thread uses a connection at a time.
    """

    def __init__(self, address: ServerAddress, timeout_seconds: float) -> None:
        self.address = address
        self.timeout_seconds = timeout_seconds
        self._reader = hiredis.Reader()
        self._socket: socket.socket | None = None
        self._socket = sock = self._open_socket()
        self._poll: Any = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
        self._handshake()

    def _open_socket(self) -> socket.socket:
        address = self.address
        sock: socket.socket | None = None
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout_seconds)
                sock.connect(address.path)
            else:
                sock = socket.create_connection((address.host, address.port), self.timeout_seconds)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.use_tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=address.host)
            if KERNEL_TIMEOUTS:
                seconds, microseconds = divmod(round(self.timeout_seconds * 1_000_000), 1_000_000)
                timeval = struct.pack("@ll", seconds, microseconds)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
                sock.settimeout(None)
        except TimeoutError as error:
            if sock is not None:
                sock.close()
            raise StoreTimeout(
                f"connecting to Redis at {address.target} took longer than {self.timeout_seconds * 1000:.0f} ms"
            ) from error
        except OSError as error:
            if sock is not None:
                sock.close()
            raise StoreError(f"cannot connect to Redis at {address.target}: {error}") from error
        return sock

    def _handshake(self) -> None:
        for name, command in address_setup_commands(self.address):
            self._check_reply(self.call(command), name)

    def _check_reply(self, reply: Any, command: str) -> None:
        if isinstance(reply, hiredis.ReplyError):
            self.close()
            raise StoreError(f"Redis at {self.address.target} rejected {command}: {reply}", retryable=False)

    @property
    def is_reusable(self) -> bool:
        """False when the server has closed the connection or sent bytes that no call requested.

        An idle connection reads as closed after a Redis restart, or after
        Redis dropped it for being idle (its ``timeout`` setting). Checking
        before a call lets the call go out on a new connection instead of
        failing.
        """
        sock = self._socket
        if sock is None:
            return False
        if self._poll is not None:
            return not self._poll.poll(0)
        return not select.select([sock], [], [], 0)[0]

    def call(self, command: bytes) -> Any:
        """Send one packed command and return its reply; an error reply comes back as a ``hiredis.ReplyError``."""
        sock = self._socket
        if sock is None:
            raise StoreError(f"no connection to Redis at {self.address.target}")
        reader = self._reader
        try:
            sock.sendall(command)
            while True:
                data = sock.recv(RECEIVE_BYTES)
                if not data:
                    raise ConnectionResetError("the server closed the connection")
                reader.feed(data)
                reply = reader.gets()
                if reply is not False:
                    return reply
        except SOCKET_TIMEOUTS as error:
            self.close()
            raise StoreTimeout(
                f"Redis at {self.address.target} did not respond within {self.timeout_seconds * 1000:.0f} ms"
            ) from error
        except (OSError, hiredis.ProtocolError) as error:
            self.close()
            raise StoreError(f"connection to Redis at {self.address.target} failed: {error}") from error

    def close(self) -> None:
        sock = self._socket
        self._socket = None
        if sock is not None:
            sock.close()


CLUSTER_SLOTS = 16384


class ClusterRouter:
    """One :class:`RedisPipeline` per cluster primary, and the slot map that routes each key to one.

    The slot map comes from ``CLUSTER SLOTS`` and is read again after a
    connection to a node fails; a ``MOVED`` reply updates one slot at once.
    Calls to one node in one tick share one write, as on a single server.
    """

    def __init__(
        self,
        nodes: list[tuple[str, int]],
        *,
        username: str | None,
        password: str | None,
        use_tls: bool,
        timeout_seconds: float,
    ) -> None:
        self.startup_nodes = list(nodes)
        self.username = username
        self.password = password
        self.use_tls = use_tls
        self.timeout_seconds = timeout_seconds
        self.loop = asyncio.get_running_loop()
        self._slots: list[tuple[str, int] | None] = [None] * CLUSTER_SLOTS
        self._pipelines: dict[tuple[str, int], RedisPipeline] = {}
        self._connecting: dict[tuple[str, int], asyncio.Task[RedisPipeline]] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self.needs_refresh = True

    def _address(self, node: tuple[str, int]) -> ServerAddress:
        scheme = "rediss" if self.use_tls else "redis"
        login = ""
        if self.password is not None:
            login = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return ServerAddress(f"{scheme}://{login}{node[0]}:{node[1]}/0")

    async def pipeline(self, node: tuple[str, int]) -> RedisPipeline:
        """Return the connected pipeline of ``node``, connecting once for all waiting calls."""
        pipeline = self._pipelines.get(node)
        if pipeline is not None and pipeline.is_connected:
            return pipeline

        task = self._connecting.get(node)
        if task is None or task.done():
            task = self.loop.create_task(self._connect(node))
            self._connecting[node] = task
        try:
            return await asyncio.shield(task)
        except StoreError:
            self.needs_refresh = True
            raise

    async def _connect(self, node: tuple[str, int]) -> RedisPipeline:
        old = self._pipelines.pop(node, None)
        if old is not None:
            old.close()
        pipeline = RedisPipeline(self._address(node), self.timeout_seconds)
        await pipeline.connect()
        self._pipelines[node] = pipeline
        return pipeline

    async def pipeline_for_slot(self, slot: int) -> RedisPipeline:
        """Return the pipeline of the primary that serves ``slot``."""
        if self.needs_refresh:
            await self.refresh()
        node = self._slots[slot]
        if node is None:
            raise StoreError(f"no Redis Cluster node serves slot {slot}; check CLUSTER SLOTS on the cluster")
        return await self.pipeline(node)

    async def refresh(self) -> None:
        """Read the slot map from the first node that responds, one refresh at a time."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = self.loop.create_task(self._read_slots())
        await asyncio.shield(task)

    async def _read_slots(self) -> None:
        known = [node for node in dict.fromkeys(self._slots) if node is not None]
        errors = []
        for node in [*known, *self.startup_nodes]:
            try:
                pipeline = await self.pipeline(node)
                reply = await pipeline.call(pack_command("CLUSTER", "SLOTS"))
            except StoreError as error:
                errors.append(str(error))
                continue
            if isinstance(reply, RespError) or not isinstance(reply, list):
                errors.append(f"{node[0]}:{node[1]} replied {reply!r} to CLUSTER SLOTS")
                continue

            slots: list[tuple[str, int] | None] = [None] * CLUSTER_SLOTS
            for first, last, primary, *_replicas in reply:
                host = primary[0].decode() if primary[0] else node[0]
                owner = (host, int(primary[1]))
                slots[first : last + 1] = [owner] * (last - first + 1)
            self._slots = slots
            self.needs_refresh = False
            return
        raise StoreError("no Redis Cluster node returned the slot map (CLUSTER SLOTS): " + "; ".join(errors[-3:]))

    def primaries(self) -> list[tuple[str, int]]:
        """Return the primaries in the current slot map."""
        return [node for node in dict.fromkeys(self._slots) if node is not None]

    def moved(self, slot: int, node: tuple[str, int]) -> None:
        """Record a ``MOVED`` redirection and read the whole map again before the next call."""
        self._slots[slot] = node
        self.needs_refresh = True

    def close(self) -> None:
        for pipeline in self._pipelines.values():
            pipeline.close()
        self._pipelines.clear()


def parse_redirection(message: str) -> tuple[str, int, tuple[str, int]] | None:
    """Split ``MOVED 3999 127.0.0.1:6381`` or ``ASK …`` into (kind, slot, node); None for other errors."""
    parts = message.split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    return parts[0], int(parts[1]), (host.strip("[]"), int(port))
