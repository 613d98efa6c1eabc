"""Server logs: JSON lines on stderr, changes at INFO, request lines only at DEBUG, and no secret anywhere."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest

from e2e.server import Server, start_server

pytestmark = pytest.mark.e2e

SERVICE_TOKEN = "svc-4f1d2c9e8b7a6f5e"
ADMIN_TOKEN = "adm-9a8b7c6d5e4f3a2b"
READONLY_TOKEN = "ro-1b2c3d4e5f6a7b8c"
WRONG_TOKEN = "wrong-7e6d5c4b3a2f1e0d"
JWT_SECRET = "jwtsecret-0f1e2d3c4b5a69788796a5b4"


def server_env(directory: Path) -> dict[str, str]:
    return {
        "RAMPGATE_DATABASE_URL": f"sqlite:///{directory}/catalog.db",
        "RAMPGATE_COUNTER_STORE": "memory",
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAMPGATE_ADMIN_READONLY_TOKEN": READONLY_TOKEN,
        "RAMPGATE_JWT_SECRET": JWT_SECRET,
        "RAMPGATE_CONFIG": str(directory / "absent.toml"),
    }


def exercise(server: Server) -> list[str]:
    """Send authenticated requests of every kind, good and bad; return the JWTs used."""
    good_jwt = jwt.encode({"sub": "log-user", "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    bad_jwt = jwt.encode({"sub": "log-user", "exp": int(time.time()) + 600}, "other-secret-0123456789abcdef0123456789", algorithm="HS256")
    check = {"actor_type": "user", "actor_id": "log-user", "action": "search"}

    with httpx.Client(base_url=server.url) as client:
        client.post("/v1/check", json=check, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
        client.post("/v1/check", json=check, headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        client.patch(
            "/v1/flags/rate_limit_enforcement", json={"enabled": True, "percentage": 100},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        client.patch(
            "/v1/flags/rate_limit_enforcement", json={"percentage": 3},
            headers={"Authorization": f"Bearer {READONLY_TOKEN}"},
        )
        client.get("/metrics", headers={"Authorization": f"Bearer {READONLY_TOKEN}"})
        for _ in range(6):
            client.post("/v1/media/upload-authorize", json={}, headers={"Authorization": f"Bearer {good_jwt}"})
        client.post("/v1/media/upload-authorize", json={}, headers={"Authorization": f"Bearer {bad_jwt}"})
        client.post("/v1/check", content=b"{", headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"})
    return [good_jwt, bad_jwt]


def parsed_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_no_secrets(text: str, jwts: list[str]) -> None:
    for secret in (SERVICE_TOKEN, ADMIN_TOKEN, READONLY_TOKEN, WRONG_TOKEN, JWT_SECRET, *jwts):
        assert secret not in text
    for jwt_text in jwts:
        header, payload, signature = jwt_text.split(".")
        assert payload not in text
        assert signature not in text


def test_logs_info_without_secrets(tmp_path: Path) -> None:
    with start_server(server_env(tmp_path)) as server:
        jwts = exercise(server)
    text = server.logs()

    assert_no_secrets(text, jwts)
    lines = parsed_lines(text)
    events = [line["event"] for line in lines]
    assert "service.started" in events
    assert "flag.changed" in events
    assert "service.stopped" in events
    assert "http.request" not in events
    change = next(line for line in lines if line["event"] == "flag.changed")
    assert change["level"] == "info"
    assert change["flag"] == "rate_limit_enforcement"
    assert change["percentage"] == 100


def test_logs_debug_request_lines(tmp_path: Path) -> None:
    with start_server(server_env(tmp_path), args=("--log-level", "DEBUG")) as server:
        jwts = exercise(server)
    text = server.logs()

    assert_no_secrets(text, jwts)
    requests = [line for line in parsed_lines(text) if line["event"] == "http.request"]
    assert {line["path"] for line in requests} >= {"/v1/check", "/v1/flags/rate_limit_enforcement", "/metrics"}
    assert {line["status"] for line in requests} >= {200, 400, 401, 403, 429}
    assert all(line["level"] == "debug" for line in requests)
