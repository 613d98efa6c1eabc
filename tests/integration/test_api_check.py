"""/v1/check, the protected examples, /metrics and readiness over the ASGI app."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient

from rampgate.service.app import create_app
from rampgate.settings import Settings

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "service-token-for-check-tests"
ADMIN_TOKEN = "admin-token-for-check-tests"
JWT_SECRET = "jwt-secret-for-check-tests-0123456789abcdef"
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DECISION_FIELDS = {
    "allowed", "mode", "would_block", "reason", "action", "tier", "policy", "limit",
    "window_seconds", "remaining", "reset_after", "retry_after", "message",
}
BLOCKED_FIELDS = {"error", "action", "tier", "retryAfter", "limit", "windowSeconds", "message"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/catalog.db",
        counter_store="memory",
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        jwt_secret=JWT_SECRET,
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.patch(
            "/v1/flags/rate_limit_enforcement", json={"enabled": True, "percentage": 100}, headers=ADMIN
        )
        yield test_client


def user(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def check_body(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {"actor_type": "user", "actor_id": "u-1", "action": "media_upload"}
    body.update(fields)
    return body


# -- /v1/check --------------------------------------------------------------------


def test_check_returns_decision_and_headers(client: TestClient) -> None:
    response = client.post("/v1/check", json=check_body(), headers=SERVICE)

    assert response.status_code == 200
    assert set(response.json()) == DECISION_FIELDS
    assert response.json()["allowed"] is True
    assert response.json()["mode"] == "enforce"
    assert response.json()["policy"] == "tier:B:media_upload"
    assert response.json()["remaining"] == 4
    assert response.headers["RateLimit-Policy"] == '"B.media_upload";q=5;w=60'
    assert response.headers["RateLimit"] == '"B.media_upload";r=4;t=12'


def test_check_blocked_is_200_with_message(client: TestClient) -> None:
    for _ in range(5):
        client.post("/v1/check", json=check_body(), headers=SERVICE)

    english = client.post("/v1/check", json=check_body(), headers=SERVICE)
    russian = client.post("/v1/check", json=check_body(), headers={**SERVICE, "Accept-Language": "ru-RU, en;q=0.5"})

    assert english.status_code == 200
    assert english.json()["allowed"] is False
    assert english.json()["reason"] == "limited"
    assert 11 < english.json()["retry_after"] <= 12
    assert english.json()["message"] == "Too many requests. Try again in 12 seconds."
    assert russian.json()["message"] == "Слишком много запросов. Повторите попытку через 12 секунд."
    assert english.headers["RateLimit"] == '"B.media_upload";r=0;t=12'


def test_check_cost_counts_units(client: TestClient) -> None:
    response = client.post("/v1/check", json=check_body(cost=3), headers=SERVICE)
    too_big = client.post("/v1/check", json=check_body(actor_id="u-2", cost=6), headers=SERVICE)

    assert response.json()["remaining"] == 2
    assert too_big.json()["reason"] == "exceeds_capacity"
    assert too_big.json()["retry_after"] is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"actor_id": "x" * 10_000}, "actor_id"),
        ({"actor_id": ""}, "actor_id"),
        ({"actor_type": "robot"}, "actor_type"),
        ({"action": "Send Message"}, "action"),
        ({"action": "a" * 65}, "action"),
        ({"cost": 0}, "cost"),
        ({"cost": 1_000_001}, "cost"),
        ({"cost": "2"}, "cost"),
        ({"request_id": "r" * 129}, "request_id"),
        ({"context": "not an object"}, "context"),
        ({"context": {"note": "x" * 5000}}, "context"),
        ({"context": {"nul": "a\u0000b"}}, "context"),
        ({"actor_id": "a\u0000b"}, "actor_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_check_invalid_input_names_field(client: TestClient, fields: dict, field: str) -> None:
    response = client.post("/v1/check", json=check_body(**fields), headers=SERVICE)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == field
    assert field in response.json()["message"]


def test_check_missing_field_named(client: TestClient) -> None:
    response = client.post("/v1/check", json={"actor_type": "user", "actor_id": "u-1"}, headers=SERVICE)

    assert response.status_code == 422
    assert response.json()["field"] == "action"
    assert response.json()["message"] == "missing action"


@pytest.mark.parametrize("content", [b"{", b'{"actor_type": "user",}', b"\xff\xfe", b"[1, 2"])
def test_check_malformed_json_is_400(client: TestClient, content: bytes) -> None:
    response = client.post("/v1/check", content=content, headers={**SERVICE, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == "body"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"actor_type": "\xff\xfe", "actor_id": "u-1", "action": "search"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["invalid_utf8", "deep_nesting"],
)
def test_check_undecodable_body_is_400(client: TestClient, content: bytes, reason: str) -> None:
    response = client.post("/v1/check", content=content, headers={**SERVICE, "Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == "body"
    assert response.json()["value"] is None
    assert response.json()["message"].startswith("malformed JSON in the request body: ")
    assert reason in response.json()["message"]


@pytest.mark.parametrize(("cost", "shown"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e400", "Infinity")])
def test_check_non_finite_cost_is_422(client: TestClient, cost: str, shown: str) -> None:
    content = f'{{"actor_type": "user", "actor_id": "u-1", "action": "search", "cost": {cost}}}'.encode()

    response = client.post("/v1/check", content=content, headers={**SERVICE, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["field"] == "cost"
    assert response.json()["value"] == shown


def test_check_lone_surrogate_is_422(client: TestClient) -> None:
    content = b'{"actor_type": "user", "actor_id": "\\ud800", "action": "search"}'

    response = client.post("/v1/check", content=content, headers={**SERVICE, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["field"] == "actor_id"


def test_check_audits_enforced_decision(client: TestClient) -> None:
    client.post("/v1/check", json=check_body(request_id="req-1", context={"ip": "192.0.2.1"}), headers=SERVICE)
    gate = client.app.state.gate  # type: ignore[attr-defined]
    gate.recorder.flush()

    with gate.engine.connect() as connection:
        row = connection.exec_driver_sql(
            "select actor_id, action, allowed, request_id, context from rate_limit_audits"
        ).one()

    assert row.actor_id == "u-1"
    assert row.request_id == "req-1"
    assert json.loads(row.context)["ip"] == "192.0.2.1"


# -- protected examples -----------------------------------------------------------


def test_upload_sixth_is_429(client: TestClient) -> None:
    statuses = [client.post("/v1/media/upload-authorize", json={}, headers=user("bob")).status_code for _ in range(5)]
    blocked = client.post("/v1/media/upload-authorize", json={}, headers=user("bob"))

    assert statuses == [200] * 5
    assert blocked.status_code == 429
    assert set(blocked.json()) == BLOCKED_FIELDS
    assert blocked.json()["error"] == "rate_limited"
    assert blocked.json()["retryAfter"] == 12
    assert blocked.headers["Retry-After"] == "12"
    assert blocked.headers["RateLimit"] == '"B.media_upload";r=0;t=12'
    assert blocked.headers["X-Request-ID"]


def test_upload_body_optional(client: TestClient) -> None:
    absent = client.post("/v1/media/upload-authorize", headers=user("carol"))
    typed = client.post("/v1/media/upload-authorize", json={"content_type": "image/png"}, headers=user("carol"))

    assert absent.status_code == 200
    assert absent.json()["content_type"] is None
    assert typed.json()["content_type"] == "image/png"
    assert typed.headers["RateLimit"] == '"B.media_upload";r=3;t=12'


def test_upload_shadow_sends_no_ratelimit_headers(client: TestClient) -> None:
    client.patch("/v1/flags/rate_limit_enforcement", json={"percentage": 0}, headers=ADMIN)

    responses = [client.post("/v1/media/upload-authorize", json={}, headers=user("dora")) for _ in range(6)]

    assert [r.status_code for r in responses] == [200] * 6
    assert all("RateLimit" not in r.headers for r in responses)
    assert all("RateLimit-Policy" not in r.headers for r in responses)


def test_upload_exceeds_capacity_no_retry_after(client: TestClient) -> None:
    client.put(
        "/v1/limits",
        json={"scope": "actor", "actor_type": "user", "actor_id": "dave", "action": "media_upload",
              "limit": 1, "window_seconds": 60, "cost_per_action": 2},
        headers=ADMIN,
    )

    blocked = client.post("/v1/media/upload-authorize", json={}, headers=user("dave"))

    assert blocked.status_code == 429
    assert "Retry-After" not in blocked.headers
    assert blocked.json()["retryAfter"] is None
    assert blocked.json()["message"] == "This request is larger than the limit allows and cannot be accepted."


def test_dm_send_uses_send_message(client: TestClient) -> None:
    response = client.post("/v1/dm/send", json={"target_user_id": "erin", "body": "hi"}, headers=user("frank"))

    assert response.status_code == 200
    assert response.json()["sent"] is True
    assert response.json()["target_user_id"] == "erin"
    assert response.headers["RateLimit-Policy"] == '"B.send_message";q=60;w=60'


@pytest.mark.parametrize(
    ("body", "field"),
    [({"body": "hi"}, "target_user_id"), ({"target_user_id": "erin", "body": ""}, "body"),
     ({"target_user_id": "x" * 10_000, "body": "hi"}, "target_user_id")],
)
def test_dm_send_invalid_rejected(client: TestClient, body: dict, field: str) -> None:
    response = client.post("/v1/dm/send", json=body, headers=user("frank"))

    assert response.status_code == 422
    assert response.json()["field"] == field


def test_dm_send_suspended_actor(client: TestClient) -> None:
    client.put(
        "/v1/trust", json={"actor_type": "user", "actor_id": "gina", "tier": "D", "enforcement_level": "E5"},
        headers=ADMIN,
    )

    response = client.post(
        "/v1/dm/send", json={"target_user_id": "erin", "body": "hi"}, headers={**user("gina"), "Accept-Language": "ru"}
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3600"
    assert response.json()["message"] == "Действия вашей учётной записи временно ограничены. Повторите попытку через 1 час."


# -- metrics and readiness --------------------------------------------------------


def test_metrics_count_decisions(client: TestClient) -> None:
    for _ in range(6):
        client.post("/v1/check", json=check_body(), headers=SERVICE)
    client.post("/v1/check", json=check_body(action="unknown_action"), headers=SERVICE)

    text = client.get("/metrics", headers=ADMIN).text

    assert 'rampgate_decisions_total{action="media_upload",mode="enforce",outcome="allowed"} 5.0' in text
    assert 'rampgate_decisions_total{action="media_upload",mode="enforce",outcome="blocked"} 1.0' in text
    assert 'rampgate_decisions_total{action="_other",mode="bypass",outcome="allowed"} 1.0' in text
    assert "rampgate_decision_duration_seconds_count 7.0" in text
    assert 'rampgate_flag_percentage{flag="rate_limit_enforcement"} 100.0' in text
    assert "rampgate_audit_queue_depth" in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names
    assert all(name.startswith("rampgate_") for name in names)


def test_metrics_audit_written(client: TestClient) -> None:
    client.post("/v1/check", json=check_body(), headers=SERVICE)
    client.app.state.gate.recorder.flush()  # type: ignore[attr-defined]

    text = client.get("/metrics", headers=ADMIN).text

    assert "rampgate_audit_written_total 1.0" in text


def test_readyz_reports_catalog_down(client: TestClient) -> None:
    gate = client.app.state.gate  # type: ignore[attr-defined]
    path = Path(gate.engine.url.database)
    path.rename(path.with_suffix(".moved"))
    path.mkdir()

    try:
        gate.engine.dispose()
        response = client.get("/readyz")
    finally:
        path.rmdir()
        path.with_suffix(".moved").rename(path)

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "catalog": "unreachable", "counter_store": "ok"}


def test_check_plain_text_body_names_content_type(client: TestClient) -> None:
    response = client.post(
        "/v1/check", content=b'{"actor_type": "user"}', headers={**SERVICE, "Content-Type": "text/plain"}
    )

    assert response.status_code == 422
    assert response.json()["value"] == '{"actor_type": "user"}'
    assert "Content-Type: application/json" in response.json()["message"]
