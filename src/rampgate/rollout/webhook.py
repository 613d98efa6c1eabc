"""Posting rollout transitions to ``RAMPGATE_WEBHOOK_URL`` without ever stalling the controller.

:meth:`WebhookSender.post` only appends to a bounded queue. A background
thread sends each document as a JSON POST and retries a failed one with
exponential backoff. A document still undelivered after the last attempt is
logged and dropped, and so is a document that finds the queue full.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import httpx

logger = logging.getLogger(__name__)


class WebhookSender:
    """Sends JSON documents to one URL from a background thread.

    ``attempts`` is how often one document is tried; the waits between tries
    start at ``backoff_seconds`` and double up to ``max_backoff_seconds``.
    ``timeout_seconds`` bounds each request.
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        max_queue: int = 1000,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be 1 or more, not {attempts}")
        self.url = url
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rampgate-webhook", daemon=True)
            self._thread.start()

    def post(self, document: dict[str, Any]) -> None:
        """Queue ``document`` for delivery; return at once, whatever the receiver does."""
        self.start()
        try:
            self._idle.clear()
            self._queue.put_nowait(document)
        except queue.Full:
            self.dropped += 1
            logger.warning(
                "rollout.webhook_dropped",
                extra={"event": document.get("event"), "flag": document.get("flag"), "queued": self._queue.qsize()},
            )

    def close(self, drain_seconds: float = 5.0) -> None:
        """Wait up to ``drain_seconds`` for the queue to empty, then stop the thread."""
        deadline = time.monotonic() + drain_seconds
        while not self._idle.is_set() and time.monotonic() < deadline:
            self._idle.wait(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()) + 1)
            self._thread = None
        if not self._queue.empty():
            logger.warning("rollout.webhook_undelivered", extra={"url": self.url, "queued": self._queue.qsize()})

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_seconds) as client:
            while not self._stop.is_set():
                try:
                    document = self._queue.get(timeout=0.2)
                except queue.Empty:
                    self._idle.set()
                    continue
                self._deliver(client, document)
                if self._queue.empty():
                    self._idle.set()

    def _deliver(self, client: httpx.Client, document: dict[str, Any]) -> None:
        wait = self.backoff_seconds
        for attempt in range(1, self.attempts + 1):
            error: str
            try:
                response = client.post(self.url, json=document)
                if response.is_success:
                    self.delivered += 1
                    return
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"

            if attempt == self.attempts:
                break
            logger.warning(
                "rollout.webhook_retry",
                extra={"event": document.get("event"), "attempt": attempt, "error": error, "retry_in_seconds": wait},
            )
            if self._stop.wait(wait):
                break
            wait = min(wait * 2, self.max_backoff_seconds)

        self.failed += 1
        logger.error(
            "rollout.webhook_failed",
            extra={"url": self.url, "event": document.get("event"), "flag": document.get("flag"), "error": error},
        )
