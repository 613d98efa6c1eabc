"""RateLimitMiddleware and @rate_limited in real Starlette and FastAPI apps, driven through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from rampgate import AsyncGate, ConfigurationError, Gate
from rampgate.core.decision import Decision
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.gate import memory_gate
from rampgate.service.middleware import RateLimitMiddleware, RouteActions, rate_limited

BLOCKED_BODY = {
    "error": "rate_limited",
    "action": "media_upload",
    "tier": "B",
    "retryAfter": 12,
    "limit": 5,
    "windowSeconds": 60,
    "message": "Too many requests. Try again in 12 seconds.",
}


class CapturingRecorder:
    """Keeps every decision with the request id and context the gate was given."""

    def __init__(self) -> None:
        self.records: list[tuple[Decision, str | None, dict[str, Any] | None]] = []

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None:
        self.records.append((decision, request_id, context))

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def recorder() -> CapturingRecorder:
    return CapturingRecorder()


@pytest.fixture
async def async_gate(tmp_path: Path, clock: Callable[[], float], recorder: CapturingRecorder) -> AsyncIterator[AsyncGate]:
    """An AsyncGate on a fresh SQLite file with memory counters, enforcing every actor."""
    gate = AsyncGate(
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        counter_store="memory",
        clock=clock,
        watch=False,
        recorder=recorder,
    )
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
    gate.refresh()
    yield gate
    await gate.aclose()


def user_from_header(request: Request) -> tuple[str, str] | None:
    user_id = request.headers.get("x-user-id")
    return ("user", user_id) if user_id is not None else None


async def upload(request: Request) -> Response:
    request.app.state.calls += 1
    return JSONResponse({"uploaded": True}, headers={"X-App": "kept"})


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def starlette_app(gate: Gate | AsyncGate | None, **options: Any) -> Starlette:
    """A Starlette app whose upload route is governed by the middleware, and whose health route is not."""
    app = Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/items/{item_id}", health, methods=["GET", "DELETE"]),
            Route("/health", health),
            WebSocketRoute("/ws", echo),
        ]
    )
    app.state.calls = 0
    options.setdefault("actor", user_from_header)
    options.setdefault("action", {"POST /upload": "media_upload"})
    app.add_middleware(RateLimitMiddleware, gate=gate, **options)
    return app


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def post_uploads(client: httpx.AsyncClient, count: int, **headers: str) -> list[httpx.Response]:
    headers = {"X-User-ID": "u-42", **headers}
    return [await client.post("/upload", headers=headers) for _ in range(count)]


# -- middleware ------------------------------------------------------------


async def test_middleware_allowed_has_ratelimit_headers(async_gate: AsyncGate) -> None:
    """An allowed, enforced request reaches the app and its response gets the RateLimit headers."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        response = await client.post("/upload", headers={"X-User-ID": "u-42"})

    assert response.status_code == 200
    assert response.json() == {"uploaded": True}
    assert response.headers["X-App"] == "kept"
    assert response.headers["RateLimit-Policy"] == '"B.media_upload";q=5;w=60'
    assert response.headers["RateLimit"] == '"B.media_upload";r=4;t=12'
    assert app.state.calls == 1


async def test_middleware_blocks_sixth_upload(async_gate: AsyncGate) -> None:
    """The sixth upload gets the service's 429 and never reaches the app."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        responses = await post_uploads(client, 6)

    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 429]
    assert responses[4].headers["RateLimit"] == '"B.media_upload";r=0;t=12'
    blocked = responses[5]
    assert blocked.json() == BLOCKED_BODY
    assert blocked.headers["Retry-After"] == "12"
    assert blocked.headers["RateLimit-Policy"] == '"B.media_upload";q=5;w=60'
    assert blocked.headers["RateLimit"] == '"B.media_upload";r=0;t=12'
    assert blocked.headers["Content-Type"] == "application/json"
    assert app.state.calls == 5


async def test_middleware_allows_again_after_retry_after(async_gate: AsyncGate, clock: Any) -> None:
    """Once Retry-After has passed, the same request is allowed."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        blocked = (await post_uploads(client, 6))[-1]
        clock.advance(float(blocked.headers["Retry-After"]))
        again = await client.post("/upload", headers={"X-User-ID": "u-42"})

    assert again.status_code == 200
    assert again.headers["RateLimit"] == '"B.media_upload";r=0;t=12'


async def test_middleware_russian_message(async_gate: AsyncGate) -> None:
    """The 429 message follows Accept-Language."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        blocked = (await post_uploads(client, 6, **{"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"}))[-1]

    assert blocked.status_code == 429
    assert blocked.json()["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."
    assert blocked.json()["retryAfter"] == 12


async def test_middleware_shadow_mode_never_blocks(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """Outside the cohort the request is counted as if enforced but always allowed, without RateLimit headers."""
    async_gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=False, percentage=0, changed_by="test")
    async_gate.refresh()
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        responses = await post_uploads(client, 7)

    assert [r.status_code for r in responses] == [200] * 7
    assert all("RateLimit" not in r.headers for r in responses)
    decisions = [decision for decision, _, _ in recorder.records]
    assert [d.mode for d in decisions] == ["shadow"] * 7
    assert [d.would_block for d in decisions] == [False] * 5 + [True] * 2
    assert app.state.calls == 7


async def test_middleware_exceeds_capacity(async_gate: AsyncGate) -> None:
    """A request larger than the capacity gets 429 without Retry-After and with retryAfter null."""
    app = starlette_app(async_gate, cost=lambda request: int(request.headers.get("x-files", "1")))
    async with client_for(app) as client:
        response = await client.post("/upload", headers={"X-User-ID": "u-42", "X-Files": "6"})

    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.json() == {
        **BLOCKED_BODY,
        "retryAfter": None,
        "message": "This request is larger than the limit allows and cannot be accepted.",
    }
    assert response.headers["RateLimit-Policy"] == '"B.media_upload";q=5;w=60'
    assert app.state.calls == 0


async def test_middleware_suspended_actor(async_gate: AsyncGate) -> None:
    """An actor at enforcement level E5 is blocked for an hour on the first request."""
    async_gate.catalog.set_trust("user", "u-bad", level="E5", changed_by="test")
    async_gate.refresh()
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        response = await client.post("/upload", headers={"X-User-ID": "u-bad"})

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3600"
    assert response.json()["message"] == "Your account is temporarily restricted. Try again in 1 hour."


async def test_middleware_ungoverned_route(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """A route without an action passes through undecided and without RateLimit headers."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        responses = [await client.get("/health", headers={"X-User-ID": "u-42"}) for _ in range(10)]

    assert [r.status_code for r in responses] == [200] * 10
    assert all("RateLimit-Policy" not in r.headers for r in responses)
    assert recorder.records == []


async def test_middleware_anonymous_request_passes(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """A request whose actor callable returns None passes through undecided."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        responses = [await client.post("/upload") for _ in range(7)]

    assert [r.status_code for r in responses] == [200] * 7
    assert recorder.records == []


async def test_middleware_route_patterns(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """Path templates match any value, a GET pattern matches HEAD, and other methods are not governed."""
    app = starlette_app(async_gate, action={"GET /items/{item_id}": "search", "/upload": "media_upload"})
    async with client_for(app) as client:
        get = await client.get("/items/17", headers={"X-User-ID": "u-42"})
        head = await client.head("/items/18", headers={"X-User-ID": "u-42"})
        delete = await client.delete("/items/19", headers={"X-User-ID": "u-42"})

    assert get.headers["RateLimit-Policy"] == '"B.search";q=100;w=60'
    assert head.headers["RateLimit"] == '"B.search";r=98;t=1'
    assert "RateLimit" not in delete.headers
    assert [(d.action, context) for d, _, context in recorder.records] == [
        ("search", {"method": "GET", "path": "/items/17"}),
        ("search", {"method": "HEAD", "path": "/items/18"}),
    ]


async def test_middleware_action_callable(async_gate: AsyncGate) -> None:
    """An async action callable picks the action, and None leaves the request ungoverned."""

    async def action(request: Request) -> str | None:
        return "follow" if request.url.path == "/upload" else None

    app = starlette_app(async_gate, action=action)
    async with client_for(app) as client:
        governed = await client.post("/upload", headers={"X-User-ID": "u-42"})
        ungoverned = await client.get("/health", headers={"X-User-ID": "u-42"})

    assert governed.headers["RateLimit-Policy"] == '"B.follow";q=15;w=60'
    assert "RateLimit-Policy" not in ungoverned.headers


async def test_middleware_records_request_id(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """A usable X-Request-ID is recorded with the decision; an unusable one is replaced by a new id."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        await client.post("/upload", headers={"X-User-ID": "u-42", "X-Request-ID": "req-1"})
        await client.post("/upload", headers={"X-User-ID": "u-42", "X-Request-ID": "r" * 300})

    assert recorder.records[0][1] == "req-1"
    assert len(recorder.records[1][1] or "") == 32
    assert recorder.records[1][1] != "r" * 300


async def test_middleware_blocked_carries_request_id(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """The 429 carries the request id under which the blocked decision was recorded."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        responses = await post_uploads(client, 6)
        named = await client.post("/upload", headers={"X-User-ID": "u-42", "X-Request-ID": "req-7"})

    assert responses[5].headers["X-Request-ID"] == recorder.records[5][1]
    assert named.headers["X-Request-ID"] == "req-7"
    assert "X-Request-ID" not in responses[0].headers


async def test_middleware_invalid_actor_id(async_gate: AsyncGate) -> None:
    """An actor id longer than 256 characters gets 422 naming the field."""
    app = starlette_app(async_gate)
    async with client_for(app) as client:
        response = await client.post("/upload", headers={"X-User-ID": "x" * 300})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["field"] == "actor_id"
    assert "1 to 256 characters" in body["message"]
    assert app.state.calls == 0


async def test_middleware_invalid_actor_type_raises(async_gate: AsyncGate) -> None:
    """An actor callable that returns an unknown actor type is a bug in the app and raises."""
    app = starlette_app(async_gate, actor=lambda request: ("person", "u-42"))
    async with client_for(app) as client:
        with pytest.raises(ConfigurationError, match="person"):
            await client.post("/upload")


async def test_middleware_sync_gate(clock: Callable[[], float]) -> None:
    """A sync Gate decides in the thread pool and blocks the sixth upload the same way."""
    gate = memory_gate(clock=clock, watch=False, audit=False)
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
    gate.refresh()
    app = starlette_app(gate)
    try:
        async with client_for(app) as client:
            responses = await post_uploads(client, 6)
    finally:
        gate.close()

    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[5].json() == BLOCKED_BODY


async def test_middleware_gate_from_app_state(async_gate: AsyncGate) -> None:
    """Without gate= the middleware uses app.state.rampgate_gate."""
    app = starlette_app(None)
    app.state.rampgate_gate = async_gate
    async with client_for(app) as client:
        responses = await post_uploads(client, 6)

    assert responses[5].status_code == 429


async def test_middleware_missing_gate_raises(async_gate: AsyncGate) -> None:
    """Without gate= and without app.state.rampgate_gate a governed request raises a configuration error."""
    app = starlette_app(None)
    async with client_for(app) as client:
        with pytest.raises(ConfigurationError, match="app.state.rampgate_gate"):
            await client.post("/upload", headers={"X-User-ID": "u-42"})


async def test_middleware_passes_websocket(async_gate: AsyncGate, recorder: CapturingRecorder) -> None:
    """WebSocket scopes pass through untouched, even when the action callable governs every request."""
    app = starlette_app(async_gate, action=lambda request: "send_message")
    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "query_string": b"",
        "headers": [(b"x-user-id", b"u-42")],
        "scheme": "ws",
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hello"
    assert recorder.records == []


async def dummy_app(scope: Any, receive: Any, send: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"action": {"POST /upload": "Media Upload"}}, "action of route"),
        ({"action": {"FETCH /upload": "media_upload"}}, "route pattern"),
        ({"action": {"upload": "media_upload"}}, "route pattern"),
        ({"action": {"/files/{name:blob}": "media_upload"}}, "route pattern"),
        ({"action": {}}, "action"),
        ({"action": "media_upload"}, "action"),
        ({"cost": 0}, "cost"),
        ({"cost": "2"}, "cost"),
        ({"actor": "user"}, "actor"),
        ({"gate": object()}, "gate"),
    ],
)
def test_middleware_rejects_invalid_configuration(
    async_gate: AsyncGate, options: dict[str, Any], field: str
) -> None:
    """Every invalid argument raises ConfigurationError naming it when the middleware is built."""
    arguments: dict[str, Any] = {"gate": async_gate, "actor": user_from_header, "action": {"/upload": "media_upload"}}
    arguments.update(options)

    with pytest.raises(ConfigurationError) as raised:
        RateLimitMiddleware(dummy_app, **arguments)

    assert raised.value.field.startswith(field)


def test_route_actions_first_match_wins() -> None:
    """Patterns are tried in order, and a method-less pattern matches every method."""
    routes = RouteActions({"POST /media/{name}": "media_upload", "/media/{name}": "search"})

    assert routes.match("POST", "/media/cat.png") == "media_upload"
    assert routes.match("GET", "/media/cat.png") == "search"
    assert routes.match("GET", "/media/a/b") is None


# -- decorator -------------------------------------------------------------


class Message(BaseModel):
    target_user_id: str
    body: str


def fastapi_app(gate: AsyncGate | None) -> FastAPI:
    """A FastAPI app with decorated async, sync and Response-returning endpoints."""
    app = FastAPI()
    app.state.calls = 0

    @app.post("/messages/{thread_id}")
    @rate_limited("send_message", actor=user_from_header, gate=gate)
    async def send_message(thread_id: int, message: Message, request: Request, draft: bool = False) -> dict[str, Any]:
        request.app.state.calls += 1
        return {"thread_id": thread_id, "to": message.target_user_id, "draft": draft}

    @app.post("/uploads")
    @rate_limited("media_upload", actor=user_from_header, gate=gate, cost=lambda r: int(r.headers.get("x-files", "1")))
    def upload_sync() -> dict[str, bool]:
        return {"uploaded": True}

    @app.get("/search")
    @rate_limited("search", actor=user_from_header, gate=gate)
    async def search() -> Response:
        return PlainTextResponse("results", headers={"X-App": "kept"})

    @app.get("/profile")
    @rate_limited("api_call", actor=user_from_header, gate=gate)
    async def profile(response: Response) -> dict[str, str]:
        response.headers["X-Profile"] = "set by endpoint"
        return {"name": "u-42"}

    return app


async def test_decorator_fastapi_allowed(async_gate: AsyncGate) -> None:
    """An allowed request runs the endpoint with its own parameters, and the response gets the RateLimit headers."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        response = await client.post(
            "/messages/7?draft=true", json={"target_user_id": "u-7", "body": "hi"}, headers={"X-User-ID": "u-42"}
        )

    assert response.status_code == 200
    assert response.json() == {"thread_id": 7, "to": "u-7", "draft": True}
    assert response.headers["RateLimit-Policy"] == '"B.send_message";q=60;w=60'
    assert response.headers["RateLimit"] == '"B.send_message";r=59;t=1'


async def test_decorator_fastapi_blocks(async_gate: AsyncGate) -> None:
    """A blocked request gets the service's 429 and the endpoint does not run."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        responses = [
            await client.post("/messages/7", json={"target_user_id": "u-7", "body": "hi"}, headers={"X-User-ID": "u-42"})
            for _ in range(61)
        ]

    assert [r.status_code for r in responses] == [200] * 60 + [429]
    assert responses[60].json() == {
        "error": "rate_limited",
        "action": "send_message",
        "tier": "B",
        "retryAfter": 1,
        "limit": 60,
        "windowSeconds": 60,
        "message": "Too many requests. Try again in 1 second.",
    }
    assert responses[60].headers["Retry-After"] == "1"
    assert responses[60].headers["RateLimit"] == '"B.send_message";r=0;t=1'
    assert app.state.calls == 60


async def test_decorator_fastapi_sync_endpoint(async_gate: AsyncGate) -> None:
    """A sync endpoint runs in the thread pool; a request over capacity gets 429 without Retry-After."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        allowed = await client.post("/uploads", headers={"X-User-ID": "u-42", "X-Files": "2"})
        too_large = await client.post(
            "/uploads", headers={"X-User-ID": "u-42", "X-Files": "9", "Accept-Language": "ru"}
        )

    assert allowed.json() == {"uploaded": True}
    assert allowed.headers["RateLimit"] == '"B.media_upload";r=3;t=12'
    assert too_large.status_code == 429
    assert "Retry-After" not in too_large.headers
    assert too_large.json()["retryAfter"] is None
    assert too_large.json()["message"] == "Этот запрос превышает допустимый лимит и не может быть выполнен."


async def test_decorator_response_keeps_headers(async_gate: AsyncGate) -> None:
    """An endpoint that returns a Response keeps its headers and gains the RateLimit headers."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        response = await client.get("/search", headers={"X-User-ID": "u-42"})

    assert response.text == "results"
    assert response.headers["X-App"] == "kept"
    assert response.headers["RateLimit-Policy"] == '"B.search";q=100;w=60'


async def test_decorator_shares_response_parameter(async_gate: AsyncGate) -> None:
    """An endpoint's own Response parameter keeps its headers next to the RateLimit headers."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        response = await client.get("/profile", headers={"X-User-ID": "u-42"})

    assert response.json() == {"name": "u-42"}
    assert response.headers["X-Profile"] == "set by endpoint"
    assert response.headers["RateLimit-Policy"] == '"B.api_call";q=200;w=60'


async def test_decorator_anonymous_runs_endpoint(async_gate: AsyncGate) -> None:
    """A request whose actor callable returns None runs the endpoint without RateLimit headers."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        response = await client.get("/search")

    assert response.status_code == 200
    assert "RateLimit" not in response.headers


async def test_decorator_hides_parameters_from_openapi(async_gate: AsyncGate) -> None:
    """The request and response parameters the decorator adds do not appear in the OpenAPI document."""
    app = fastapi_app(async_gate)
    async with client_for(app) as client:
        document = (await client.get("/openapi.json")).json()

    operation = document["paths"]["/messages/{thread_id}"]["post"]
    assert sorted(p["name"] for p in operation["parameters"]) == ["draft", "thread_id"]
    assert "requestBody" in operation


async def test_decorator_starlette_endpoint(async_gate: AsyncGate) -> None:
    """A decorated Starlette endpoint gets the same headers and 429, with the gate from app.state."""

    @rate_limited("media_upload", actor=user_from_header)
    async def limited_upload(request: Request) -> Response:
        return JSONResponse({"uploaded": True})

    app = Starlette(routes=[Route("/upload", limited_upload, methods=["POST"])])
    app.state.rampgate_gate = async_gate
    async with client_for(app) as client:
        responses = await post_uploads(client, 6, **{"Accept-Language": "ru"})

    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[0].headers["RateLimit"] == '"B.media_upload";r=4;t=12'
    assert responses[5].json()["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."


async def test_decorator_with_middleware_reports_both(async_gate: AsyncGate) -> None:
    """Under both the middleware and the decorator, the response lists both policies."""
    app = fastapi_app(async_gate)
    app.add_middleware(RateLimitMiddleware, gate=async_gate, actor=user_from_header, action=lambda r: "api_call")
    async with client_for(app) as client:
        response = await client.get("/search", headers={"X-User-ID": "u-42"})

    assert response.headers.get_list("RateLimit-Policy") == ['"B.search";q=100;w=60', '"B.api_call";q=200;w=60']


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"action": "Send Message"}, "action"),
        ({"cost": -1}, "cost"),
        ({"actor": None}, "actor"),
        ({"gate": "gate"}, "gate"),
    ],
)
def test_decorator_rejects_invalid_configuration(options: dict[str, Any], field: str) -> None:
    """Every invalid argument raises ConfigurationError naming it when the decorator is applied."""
    arguments: dict[str, Any] = {"action": "send_message", "actor": user_from_header}
    arguments.update(options)

    with pytest.raises(ConfigurationError) as raised:
        rate_limited(arguments.pop("action"), **arguments)

    assert raised.value.field == field


async def test_decorator_outside_route_raises(async_gate: AsyncGate) -> None:
    """Calling a decorated function without a request names the fix."""

    @rate_limited("search", actor=user_from_header, gate=async_gate)
    async def helper(query: str) -> str:
        return query

    with pytest.raises(ConfigurationError, match="below the route decorator"):
        await helper("cats")
