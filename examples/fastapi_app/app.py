"""A small FastAPI app protected by rampgate in its own process.

The middleware governs the API by route (posts, messages, search), the
decorator limits uploads with a cost per file, and ``/health`` is not
governed. Run it with::

    rampgate migrate
    rampgate flag set rate_limit_enforcement --enabled --percentage 100
    uvicorn app:app --app-dir examples/fastapi_app
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from pydantic import BaseModel

from rampgate import AsyncGate
from rampgate.service.middleware import RateLimitMiddleware, rate_limited

ROUTE_ACTIONS = {
    "POST /posts": "create_post",
    "POST /messages": "send_message",
    "GET /search": "search",
}


class Post(BaseModel):
    text: str


class Message(BaseModel):
    target_user_id: str
    body: str


def current_actor(request: Request) -> tuple[str, str] | None:
    """Return the signed-in user, else the client's IP address.

    NOTE: the user id comes from a plain header to keep the example short. A
    real app takes it from its verified session or token, never from a value
    the client can choose.
    """
    user_id = request.headers.get("x-user-id")
    if user_id:
        return "user", user_id
    if request.client is not None:
        return "ip", request.client.host
    return None


def upload_cost(request: Request) -> int:
    """Charge one unit per file.

    A count of 0 is passed on, and the gate rejects it with 422 naming the
    cost. FastAPI rejects a count that is not a whole number before the
    decorator runs, because the endpoint declares ``files: int``.
    """
    files = request.query_params.get("files", "1")
    return int(files) if files.isdigit() else 0


def create_app(gate: AsyncGate | None = None) -> FastAPI:
    """Build the app; without ``gate`` it opens an :class:`AsyncGate` from the ``RAMPGATE_*`` settings at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "rampgate_gate", None) is not None:
            yield
            return
        async with AsyncGate() as opened:
            app.state.rampgate_gate = opened
            yield

    app = FastAPI(title="rampgate example", lifespan=lifespan)
    if gate is not None:
        app.state.rampgate_gate = gate

    # Without gate=, the middleware and the decorator use app.state.rampgate_gate.
    app.add_middleware(RateLimitMiddleware, actor=current_actor, action=ROUTE_ACTIONS)

    @app.post("/posts")
    async def create_post(post: Post) -> dict[str, object]:
        return {"created": True, "length": len(post.text)}

    @app.post("/messages")
    async def send_message(message: Message) -> dict[str, object]:
        return {"sent": True, "to": message.target_user_id}

    @app.get("/search")
    async def search(q: str = "") -> dict[str, object]:
        return {"query": q, "results": []}

    @app.post("/uploads")
    @rate_limited("media_upload", actor=current_actor, cost=upload_cost)
    async def upload(files: int = 1) -> dict[str, object]:
        return {"authorized": True, "files": files}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
