"""Failure handling shared by the Redis and PostgreSQL stores: the circuit breaker, reply deadlines, warnings.

A store call has a time budget (``RAMPGATE_STORE_TIMEOUT_MS``). A call that
fails or runs out of budget raises :class:`StoreError`, and the decision
fails open (or blocks under ``fail_mode = 'closed'``). The store's
:class:`CircuitBreaker` decides when the store stops trying: at once after
an error such as a refused connection, but only after several timeouts in a
row, because one late reply is often the caller's own delay. While it is
open, calls raise at once for a short interval, doubling while the store
keeps failing. After the interval calls go to the server again, and the
first success closes the breaker, so a store recovers by itself.

:func:`await_reply` waits for a call under its budget without blaming the
store for the time this process was late to read a reply.
"""

from __future__ import annotations

import asyncio
import logging
import select
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rampgate.errors import StoreError, StoreTimeout

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")

# Timeouts in a row that open a breaker; a refused connection or another error
# opens it at once. With three, a frozen server costs three timed-out calls in
# a row before calls fail fast, while one late reply (a garbage collection, a
# busy event loop) fails only the requests of its own call.
TIMEOUT_THRESHOLD = 3


def describe_target(url: str) -> str:
    """Return ``host:port`` (or the socket path) of a server URL, never its credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an unparsable URL"
    if parts.scheme in ("unix", "redis+unix"):
        return parts.path or "a unix socket"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return netloc or parts.path or "an unnamed server"


class RateLimitedLog:
    """Logs a recurring warning at most once per ``interval_seconds``.

    Each line carries ``suppressed``, the number of repeats not logged since
    the previous line, so a long outage costs a few lines, not one per call.
    """

    def __init__(self, log: logging.Logger, interval_seconds: float = 10.0, clock: Clock = time.monotonic) -> None:
        self._log = log
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, event: str, **fields: Any) -> bool:
        """Log ``event`` unless it was logged within the interval; return whether it was logged."""
        now = self._clock()
        last = self._last.get(event)
        if last is not None and now - last < self.interval_seconds:
            self._suppressed[event] = self._suppressed.get(event, 0) + 1
            return False

        self._last[event] = now
        fields["suppressed"] = self._suppressed.pop(event, 0)
        self._log.warning(event, extra=fields)
        return True


class CircuitBreaker:
    """Fails calls fast for a growing interval while a store keeps failing.

    The breaker opens after a failure that is not a timeout (a refused or
    reset connection, a rejected login), or after ``timeout_threshold``
    timeouts (:class:`StoreTimeout` or :class:`TimeoutError`) in a row with
    no success between them. One timeout alone fails only its own call,
    because a paused process or a busy event loop can make a healthy store
    look late. While open, :meth:`check` raises :class:`StoreError` for
    ``initial_seconds``. Once that interval is over, calls go to the server
    again (half-open). The first success closes the breaker, and a failure
    opens it again for twice the interval, up to ``max_seconds``. Failures of
    calls that were already in flight when the breaker opened count, but do
    not lengthen the interval.

    A store calls :meth:`check` before each call while ``is_open`` is true,
    :meth:`record_failure` after a call that failed or ran out of budget,
    and :meth:`record_success` after a call that reached the server while
    ``consecutive_failures`` is not zero. ``target`` names what to check
    (``host:port``) in warnings and errors. Every number is in seconds of
    ``clock``.
    """

    def __init__(
        self,
        store: str,
        target: str,
        *,
        initial_seconds: float = 0.05,
        max_seconds: float = 2.0,
        timeout_threshold: int = TIMEOUT_THRESHOLD,
        clock: Clock = time.monotonic,
        warnings: RateLimitedLog | None = None,
    ) -> None:
        if initial_seconds <= 0 or max_seconds < initial_seconds:
            raise ValueError(
                f"invalid breaker intervals {initial_seconds} and {max_seconds}: need 0 < initial_seconds <= max_seconds"
            )
        if timeout_threshold < 1:
            raise ValueError(f"invalid timeout_threshold {timeout_threshold}: need at least 1")
        self.store = store
        self.target = target
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self.timeout_threshold = timeout_threshold
        self._clock = clock
        self._warnings = warnings or RateLimitedLog(logger)

        # ``is_open`` and ``consecutive_failures`` are the only attributes the healthy path reads.
        self.is_open = False
        self.consecutive_failures = 0
        self._interval = initial_seconds
        self._retry_at = 0.0
        self.failures = 0
        self.rejected = 0
        self.last_error: str | None = None

    def check(self) -> None:
        """Raise :class:`StoreError` while the breaker is open and its interval lasts."""
        if not self.is_open:
            return
        if self._clock() < self._retry_at:
            self.rejected += 1
            raise StoreError(
                f"{self.store} at {self.target} failed recently ({self.last_error}); "
                f"calls fail fast until it responds again"
            )

    def record_success(self) -> None:
        """Forget the failures counted so far, and close the breaker if it is open."""
        if self.is_open:
            self.is_open = False
            logger.info(
                "store.recovered",
                extra={"store": self.store, "target": self.target, "failed_calls": self.consecutive_failures,
                       "rejected_calls": self.rejected},
            )
            self.rejected = 0
        self.consecutive_failures = 0

    def record_failure(self, error: BaseException) -> None:
        """Count a failed call, open the breaker as the class docstring describes, and log a rate-limited warning."""
        now = self._clock()
        self.failures += 1
        self.consecutive_failures += 1
        self.last_error = _first_line(error)

        if self.is_open:
            if now < self._retry_at:
                return
            self._interval = min(self._interval * 2, self.max_seconds)
        elif _is_timeout(error) and self.consecutive_failures < self.timeout_threshold:
            self._warnings.warning(
                "store.timed_out",
                store=self.store,
                target=self.target,
                error=self.last_error,
                timeouts_in_a_row=self.consecutive_failures,
                opens_after=self.timeout_threshold,
                hint=f"a slow {self.store} at {self.target}, a busy host or event loop; "
                "this request failed open (or was blocked under fail_mode closed)",
            )
            return
        else:
            self.is_open = True
            self._interval = self.initial_seconds

        self._retry_at = now + self._interval
        self._warnings.warning(
            "store.degraded",
            store=self.store,
            target=self.target,
            error=self.last_error,
            retry_in_seconds=round(self._interval, 3),
            hint=f"check that {self.store} at {self.target} is up and reachable; "
            "decisions fail open (or block under fail_mode closed) meanwhile",
        )


class SentRequest:
    """When a store call sent its request, and on which socket; the task that runs the call fills it in."""

    __slots__ = ("fileno", "sent_at")

    def __init__(self) -> None:
        self.fileno: int | None = None
        self.sent_at: float | None = None

    def mark_sent(self, fileno: int) -> None:
        """Record that the request is being written to socket ``fileno`` now."""
        self.fileno = fileno
        self.sent_at = time.monotonic()

    def has_unread_reply(self) -> bool:
        """Return whether the server's reply (or its end of file) waits in the socket, unread by this process."""
        return self.fileno is not None and has_unread_data(self.fileno)


def has_unread_data(fileno: int) -> bool:
    """Return whether socket ``fileno`` is readable now: data, an end of file or an error wait there."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fileno, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        # A closed socket: the call's task gets the error when it reads.
        return True
    return bool(readable)


async def await_reply(task: asyncio.Task[T], request: SentRequest, budget_seconds: float) -> T:
    """Return the result of ``task``, a store call that sends ``request``; raise :class:`TimeoutError` when the store is late.

    The budget runs from ``request.sent_at``, so the time the task waited to
    be scheduled does not count. When the budget is over, the socket is
    checked before giving up. A reply waiting there arrived in time, and
    only this process was late to read it, after a busy event loop or a
    garbage collection. uvloop runs due timers before it reads sockets. The task
    then gets up to one more budget to read it. A server that sends nothing
    therefore costs one budget, plus whatever time this process was busy.
    ``task`` is cancelled when this raises or is cancelled.
    """
    clock = time.monotonic
    reading_since: float | None = None
    try:
        while True:
            sent_at = request.sent_at
            if sent_at is None:
                # The task has not started yet: only this process is late.
                remaining = budget_seconds
            elif reading_since is None:
                remaining = sent_at + budget_seconds - clock()
            else:
                remaining = reading_since + budget_seconds - clock()

            if remaining > 0:
                await asyncio.wait((task,), timeout=remaining)
                if task.done():
                    return task.result()
                continue

            if reading_since is None and request.has_unread_reply():
                reading_since = clock()
                continue
            raise TimeoutError(f"no reply within {budget_seconds * 1000:.0f} ms of sending the request")
    finally:
        if not task.done():
            task.cancel()


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, (StoreTimeout, TimeoutError))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
