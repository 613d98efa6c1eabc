"""The request log: one DEBUG line per HTTP request, and the response counts in the metrics.

A line contains the method, path, status and duration, and no headers, query
string or body, so no token or JWT reaches the log.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


def log_request(scope: Scope, status: int, started: float) -> None:
    """Log the request of ``scope`` at DEBUG; ``started`` is its ``time.perf_counter()`` at arrival."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "http.request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            },
        )


class RequestLogMiddleware:
    """Logs every HTTP request with :func:`log_request` and counts its response by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            scope["app"].state.metrics.observe_response(template, status)
            log_request(scope, status, started)
