"""Failure handling shared by the Redis and PostgreSQL stores: backoff and rate-limited warnings.

A store call has a time budget (``RAMPGATE_STORE_TIMEOUT_MS``). When a call
fails or runs out of budget, the store's :class:`CircuitBreaker` opens: for a
short interval, doubling with each further failure, calls raise
:class:`StoreError` at once instead of waiting for the budget again. After the
interval the next calls go to the server; the first success closes the
breaker, so a store recovers by itself when its server is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from rampgate.errors import StoreError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


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
    """Fails calls fast for a growing interval after a store failure.

    ``target`` names what to check (``host:port``) in warnings and errors.
    Intervals start at ``initial_seconds`` and double with every consecutive
    failure up to ``max_seconds``. Every number is in seconds of ``clock``.
    """

    def __init__(
        self,
        store: str,
        target: str,
        *,
        initial_seconds: float = 0.05,
        max_seconds: float = 2.0,
        clock: Clock = time.monotonic,
        warnings: RateLimitedLog | None = None,
    ) -> None:
        if initial_seconds <= 0 or max_seconds < initial_seconds:
            raise ValueError("need 0 < initial_seconds <= max_seconds")
        self.store = store
        self.target = target
        self.initial_seconds = initial_seconds
        self.max_seconds = max_seconds
        self._clock = clock
        self._warnings = warnings or RateLimitedLog(logger)

        # ``is_open`` is the only attribute the healthy path reads.
        self.is_open = False
        self._retry_at = 0.0
        self.consecutive_failures = 0
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
        """Close the breaker after a call that reached the server."""
        if not self.is_open:
            return
        self.is_open = False
        logger.info(
            "store.recovered",
            extra={"store": self.store, "target": self.target, "failed_calls": self.consecutive_failures,
                   "rejected_calls": self.rejected},
        )
        self.consecutive_failures = 0
        self.rejected = 0

    def record_failure(self, error: BaseException) -> None:
        """Open the breaker for the next interval and log a rate-limited warning."""
        self.failures += 1
        self.consecutive_failures += 1
        exponent = min(self.consecutive_failures - 1, 30)
        interval = min(self.initial_seconds * 2**exponent, self.max_seconds)
        self._retry_at = self._clock() + interval
        self.is_open = True
        self.last_error = _first_line(error)
        self._warnings.warning(
            "store.degraded",
            store=self.store,
            target=self.target,
            error=self.last_error,
            retry_in_seconds=round(interval, 3),
            hint=f"check that {self.store} at {self.target} is up and reachable; "
            "decisions fail open (or block under fail_mode closed) meanwhile",
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
