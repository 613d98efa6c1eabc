"""The FastAPI example in examples/fastapi_app, in-process, and its 429 next to the real service's."""

from __future__ import annotations

import importlib.util
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import jwt
import pytest

from e2e.decision_server import JWT_SECRET, SUSPENDED_ACTOR, DecisionServer, decision_server
from rampgate import AsyncGate
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.messages import blocked_message

EXAMPLE_PATH = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app" / "app.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example's module, loaded from its file because examples/ is not a package."""
    spec = importlib.util.spec_from_file_location("rampgate_fastapi_example", EXAMPLE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def gate(tmp_path: Path, clock: Callable[[], float]) -> AsyncIterator[AsyncGate]:
    """An AsyncGate on a fresh SQLite catalog, enforcing every actor, on the manual clock."""
    opened = AsyncGate(
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}", counter_store="memory", clock=clock, watch=False
    )
    opened.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
    opened.refresh()
    yield opened
    await opened.aclose()


@pytest.fixture
async def client(example: ModuleType, gate: AsyncGate) -> AsyncIterator[httpx.AsyncClient]:
    app = example.create_app(gate)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://example.test") as running:
        yield running


async def repeat(client: httpx.AsyncClient, count: int, method: str, path: str, **options: Any) -> list[httpx.Response]:
    return [await client.request(method, path, **options) for _ in range(count)]


async def test_example_posts_limited_by_route(client: httpx.AsyncClient) -> None:
    """The middleware allows 20 posts a minute to a tier-B user and blocks the 21st."""
    responses = await repeat(client, 21, "POST", "/posts", json={"text": "hi"}, headers={"X-User-ID": "u-1"})

    assert [r.status_code for r in responses] == [200] * 20 + [429]
    assert responses[0].json() == {"created": True, "length": 2}
    assert responses[0].headers["RateLimit-Policy"] == '"B.create_post";q=20;w=60'
    assert responses[20].headers["Retry-After"] == "3"
    assert responses[20].json()["message"] == "Too many requests. Try again in 3 seconds."


async def test_example_search_by_ip(client: httpx.AsyncClient) -> None:
    """Without a user the actor is the client's IP address, and a GET route is governed too."""
    responses = await repeat(client, 101, "GET", "/search", params={"q": "cats"})

    assert [r.status_code for r in responses] == [200] * 100 + [429]
    assert responses[100].json()["action"] == "search"


async def test_example_upload_decorator(client: httpx.AsyncClient) -> None:
    """The decorated upload charges one unit per file and blocks in Russian when asked."""
    headers = {"X-User-ID": "u-2", "Accept-Language": "ru"}
    first = await client.post("/uploads", params={"files": 3}, headers=headers)
    second = await client.post("/uploads", params={"files": 3}, headers=headers)

    assert first.json() == {"authorized": True, "files": 3}
    assert first.headers["RateLimit"] == '"B.media_upload";r=2;t=12'
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "12"
    assert second.json()["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."


async def test_example_upload_too_large(client: httpx.AsyncClient) -> None:
    """More files than the policy's capacity get 429 without Retry-After."""
    response = await client.post("/uploads", params={"files": 9}, headers={"X-User-ID": "u-3"})

    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.json()["retryAfter"] is None


async def test_example_upload_invalid_cost(client: httpx.AsyncClient) -> None:
    """Zero files make a cost of 0, which gets 422 naming the cost before the endpoint runs."""
    response = await client.post("/uploads", params={"files": 0}, headers={"X-User-ID": "u-4"})

    assert response.status_code == 422
    assert response.json()["field"] == "cost"


async def test_example_health_not_governed(client: httpx.AsyncClient) -> None:
    """The health route has no action, so it is never limited and has no RateLimit headers."""
    responses = await repeat(client, 30, "GET", "/health", headers={"X-User-ID": "u-5"})

    assert [r.status_code for r in responses] == [200] * 30
    assert "RateLimit" not in responses[-1].headers


async def test_example_shadow_mode(client: httpx.AsyncClient, gate: AsyncGate) -> None:
    """With the flag off (shadow mode), the sixth upload is allowed and gets no RateLimit headers."""
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=False, percentage=0, changed_by="test")
    gate.refresh()

    responses = await repeat(client, 6, "POST", "/uploads", headers={"X-User-ID": "u-6"})

    assert [r.status_code for r in responses] == [200] * 6
    assert "RateLimit" not in responses[5].headers


# -- next to the real service ---------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecisionServer]:
    with decision_server(tmp_path_factory.mktemp("decision-server")) as running:
        yield running


def end_user_headers(actor_id: str, language: str) -> dict[str, str]:
    token = jwt.encode({"sub": actor_id, "exp": int(time.time()) + 3600}, JWT_SECRET, "HS256")
    return {"Authorization": f"Bearer {token}", "Accept-Language": language}


@pytest.mark.e2e
async def test_example_429_matches_service(
    client: httpx.AsyncClient, gate: AsyncGate, service: DecisionServer
) -> None:
    """For a suspended user the example sends the very 429 of the service's protected upload endpoint."""
    gate.catalog.set_trust("user", SUSPENDED_ACTOR, level="E5", changed_by="test")
    gate.refresh()

    async with httpx.AsyncClient(base_url=service.url, timeout=10.0) as http:
        theirs = await http.post(
            "/v1/media/upload-authorize", json={}, headers=end_user_headers(SUSPENDED_ACTOR, "ru")
        )
    ours = await client.post("/uploads", headers={"X-User-ID": SUSPENDED_ACTOR, "Accept-Language": "ru"})

    assert theirs.status_code == 429
    assert ours.status_code == theirs.status_code
    for name in ("Retry-After", "RateLimit-Policy", "RateLimit", "Content-Type"):
        assert ours.headers.get(name) == theirs.headers.get(name), name
    assert "X-Request-ID" in ours.headers
    assert ours.json() == theirs.json()


@pytest.mark.e2e
async def test_example_limited_429_matches_service(client: httpx.AsyncClient, service: DecisionServer) -> None:
    """For the sixth upload both send the same policy and body, up to the seconds left, which depend on timing."""
    async with httpx.AsyncClient(base_url=service.url, timeout=10.0) as http:
        headers = end_user_headers(f"u-{uuid.uuid4().hex[:8]}", "en")
        from_service = await repeat(http, 6, "POST", "/v1/media/upload-authorize", json={}, headers=headers)
    from_example = await repeat(client, 6, "POST", "/uploads", headers={"X-User-ID": "u-7"})

    theirs, ours = from_service[5], from_example[5]
    seconds = int(theirs.headers["Retry-After"])
    assert theirs.status_code == 429
    assert ours.status_code == 429
    assert ours.headers["RateLimit-Policy"] == theirs.headers["RateLimit-Policy"]
    assert theirs.headers["RateLimit"] == f'"B.media_upload";r=0;t={seconds}'
    assert ours.headers["RateLimit"] == '"B.media_upload";r=0;t=12'
    assert theirs.json() == {**ours.json(), "retryAfter": seconds, "message": theirs.json()["message"]}
    assert theirs.json()["message"] == blocked_message("limited", seconds, "en")
