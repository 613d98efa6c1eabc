"""``POST /v1/check``: CheckEndpoint and the FastAPI route respond to every request alike.

Two applications with the same settings and the same manual clock receive
the same requests: one as ``rampgate serve`` builds it, the other without
:class:`CheckEndpoint`, so the route serves everything. Status, headers
and body must match byte for byte, and the counters must move together.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.gate import AsyncGate
from rampgate.service.app import create_app
from rampgate.service.check_endpoint import CheckEndpoint
from rampgate.settings import Settings
from tests.conftest import ManualClock

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "service-token-for-endpoint-tests"
ADMIN_TOKEN = "admin-token-for-endpoint-tests"
READONLY_TOKEN = "readonly-token-for-endpoint-tests"
# Headers that differ between two servers even when their responses match.
UNCOMPARED_HEADERS = {"date", "server"}


class Pair:
    """The served application and the route-only one, on one clock."""

    def __init__(self, directory: Path, clock: ManualClock) -> None:
        self.clock = clock
        self.clients: list[TestClient] = []
        self.gates: list[AsyncGate] = []
        self.endpoints: list[CheckEndpoint] = []
        for name, fast in (("fast", True), ("route", False)):
            settings = Settings(
                database_url=f"sqlite:///{directory / name}.db",
                counter_store="memory",
                service_token=SERVICE_TOKEN,
                admin_token=ADMIN_TOKEN,
                admin_readonly_token=READONLY_TOKEN,
            )
            gate = AsyncGate(settings=settings, clock=clock)
            gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=50, changed_by="test")
            gate.refresh()
            app = create_app(settings, gate)
            if not fast:
                app.user_middleware = [entry for entry in app.user_middleware if entry.cls is not CheckEndpoint]
            client = TestClient(app)
            client.__enter__()
            self.gates.append(gate)
            self.clients.append(client)
        self.fast_endpoint = _find_endpoint(self.clients[0].app)  # type: ignore[arg-type]
        assert _find_endpoint(self.clients[1].app) is None  # type: ignore[arg-type]

    def post(self, content: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
        fast, route = (client.post("/v1/check", content=content, headers=headers) for client in self.clients)
        return fast, route

    def close(self) -> None:
        for client in self.clients:
            client.__exit__(None, None, None)
        for gate in self.gates:
            asyncio.run(gate.aclose())


def _find_endpoint(app: FastAPI) -> CheckEndpoint | None:
    layer: Any = app.middleware_stack
    while layer is not None:
        if isinstance(layer, CheckEndpoint):
            return layer
        layer = getattr(layer, "app", None)
    return None


def assert_same(fast: Any, route: Any) -> None:
    assert fast.status_code == route.status_code, (fast.text, route.text)
    assert fast.content == route.content
    fast_headers = [(name, value) for name, value in fast.headers.multi_items() if name not in UNCOMPARED_HEADERS]
    route_headers = [(name, value) for name, value in route.headers.multi_items() if name not in UNCOMPARED_HEADERS]
    assert fast_headers == route_headers


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    both = Pair(tmp_path, ManualClock())
    yield both
    both.close()


SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"}


def body(**fields: Any) -> bytes:
    request: dict[str, Any] = {"actor_type": "user", "actor_id": "u-1", "action": "media_upload"}
    request.update(fields)
    return json.dumps(request).encode()


def test_endpoint_serves_valid_checks(pair: Pair) -> None:
    answered = pair.fast_endpoint

    for _ in range(3):
        fast, route = pair.post(body(), SERVICE)
        assert_same(fast, route)

    assert fast.status_code == 200
    assert answered is not None and answered.answered == 3


def test_blocked_and_shadow_decisions_match(pair: Pair) -> None:
    # With the flag at 50 % some of these actors are enforced and some shadowed.
    for number in range(20):
        for language in (None, "ru-RU, en;q=0.5", "en", "de, ru;q=0.3"):
            headers = dict(SERVICE)
            if language is not None:
                headers["Accept-Language"] = language
            for _ in range(7):
                assert_same(*pair.post(body(actor_id=f"u-{number}"), headers))
        pair.clock.advance(1.5)

    assert pair.fast_endpoint is not None and pair.fast_endpoint.answered == 20 * 4 * 7


@pytest.mark.parametrize(
    "content",
    [
        body(cost=0),
        body(cost=1_000_001),
        body(cost="2"),
        body(cost=2.0),
        body(cost=True),
        body(actor_type="robot"),
        body(actor_type=["user"]),
        body(actor_id=""),
        body(actor_id="x" * 257),
        body(actor_id="a\x00b"),
        body(actor_id=5),
        body(actor_id="\ud800"),
        body(action="Media"),
        body(action="media\n"),
        body(action="a" * 65),
        body(request_id="r" * 129),
        body(request_id="r\x00"),
        body(context=[1]),
        body(context={"big": "x" * 5000}),
        body(context={"nul": "\x00"}),
        body(unknown=1),
        b'{"actor_type": "user"}',
        b"[]",
        b"null",
        b"{not json",
        b"\xff\xfe",
        json.dumps({"actor_type": "user", "actor_id": "u-1", "action": "media_upload", "cost": 2}).encode(),
    ],
)
def test_invalid_bodies_match(pair: Pair, content: bytes) -> None:
    assert_same(*pair.post(content, SERVICE))


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"Content-Type": "application/json", "Authorization": "Bearer wrong"},
        {"Content-Type": "application/json", "Authorization": f"Bearer {READONLY_TOKEN}"},
        {"Content-Type": "application/json", "Authorization": f"Basic {SERVICE_TOKEN}"},
        {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
        {"Content-Type": "application/json; charset=utf-8", "Authorization": f"Bearer {SERVICE_TOKEN}"},
        {"Content-Type": "text/plain", "Authorization": f"Bearer {SERVICE_TOKEN}"},
        {"Content-Type": "application/merge-patch+json", "Authorization": f"Bearer {SERVICE_TOKEN}"},
        {"Authorization": f"Bearer {SERVICE_TOKEN}"},
    ],
)
def test_credentials_and_content_types_match(pair: Pair, headers: dict[str, str]) -> None:
    for _ in range(2):
        assert_same(*pair.post(body(), headers))


def test_wrong_token_rejected_after_right_one(pair: Pair) -> None:
    assert pair.post(body(), SERVICE)[0].status_code == 200

    fast, route = pair.post(body(), {"Content-Type": "application/json", "Authorization": "Bearer wrong"})

    assert fast.status_code == 401
    assert_same(fast, route)


def test_other_requests_pass_through(pair: Pair) -> None:
    fast, route = (client.get("/v1/check", headers=SERVICE) for client in pair.clients)
    assert_same(fast, route)
    assert fast.status_code == 405

    fast, route = (client.post("/v1/check/", content=body(), headers=SERVICE) for client in pair.clients)
    assert fast.status_code == route.status_code


def test_endpoint_counts_in_metrics(pair: Pair) -> None:
    for _ in range(6):
        pair.post(body(actor_id="u-metrics"), SERVICE)

    fast, route = (client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) for client in pair.clients)

    def series(text: str) -> list[str]:
        return sorted(
            line for line in text.splitlines()
            if line.startswith(("rampgate_decisions_total", "rampgate_http_responses_total{route=\"/v1/check\""))
        )

    assert series(fast.text) == series(route.text)
    assert any('route="/v1/check",status="200"} 6.0' in line for line in series(fast.text))


fields = st.fixed_dictionaries(
    {},
    optional={
        "actor_type": st.sampled_from(["user", "ip", "device", "robot", "", 1, None]),
        "actor_id": st.one_of(st.text(max_size=300), st.integers(), st.none()),
        "action": st.sampled_from(["media_upload", "api_call", "dm_send", "unknown_action", "Bad", "x" * 65, 3]),
        "cost": st.one_of(st.integers(-2, 1_000_002), st.floats(allow_nan=False), st.booleans(), st.text(max_size=3)),
        "request_id": st.one_of(st.none(), st.text(max_size=140)),
        "context": st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.text(max_size=50), max_size=3)),
        "extra": st.integers(),
    },
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=fields)
def test_generated_requests_match(pair: Pair, request: dict[str, Any]) -> None:
    content = json.dumps(request, ensure_ascii=False).encode("utf-8", "surrogatepass")

    assert_same(*pair.post(content, SERVICE))


def test_oversized_body_gets_413(pair: Pair) -> None:
    content = body(context={"padding": "x" * (2 * 1024 * 1024)})

    fast, route = pair.post(content, SERVICE)

    assert fast.status_code == 413
    assert fast.json()["error"] == "payload_too_large"
    assert_same(fast, route)


def test_oversized_chunked_body_gets_413(pair: Pair) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"actor_type": "user", "actor_id": "u-1", "action": "media_upload", "context": {"padding": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    responses = [client.post("/v1/check", content=chunks(), headers=SERVICE) for client in pair.clients]

    assert [response.status_code for response in responses] == [413, 413]
    assert responses[0].json()["error"] == "payload_too_large"
    assert "1048576 bytes" in responses[0].json()["message"]
