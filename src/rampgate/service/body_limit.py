"""A limit on the size of request bodies, rejected with the service's JSON error body.

Every body the service accepts is small (the largest valid one is a direct
message of 10,000 characters), so a client that sends megabytes is either
broken or hostile, and the body must not be read into memory. A declared
``Content-Length`` above the limit gets 413 at once. A chunked body is
counted as it arrives, and the read that passes the limit raises
``HTTPException(413)``, which the application's error handlers turn into
the same JSON body.
"""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rampgate.service.errors import error_body, log_rejection

logger = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """Rejects request bodies larger than ``max_bytes`` with 413 ``payload_too_large``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._reject(scope, send)
                return
            # The server stops reading at the declared length, so no count is needed.
            await self.app(scope, receive, send)
            return

        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    log_rejection("http.payload_too_large", scope["path"])
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, receive_counted, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        log_rejection("http.payload_too_large", scope["path"])
        content = json.dumps(error_body("payload_too_large", self._message()), separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": content})

    def _message(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes; send at most {self.max_bytes}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
