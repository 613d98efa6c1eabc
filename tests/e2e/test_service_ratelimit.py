"""The 429 contract against a real ``rampgate serve``: headers, body, language, and waiting Retry-After out."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import httpx
import jwt
import pytest

from e2e.server import Server, start_server

pytestmark = pytest.mark.e2e

SERVICE_TOKEN = "service-token-for-ratelimit-e2e"
ADMIN_TOKEN = "admin-token-for-ratelimit-e2e"
JWT_SECRET = "jwt-secret-for-ratelimit-e2e-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BLOCKED_FIELDS = {"error", "action", "tier", "retryAfter", "limit", "windowSeconds", "message"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("ratelimit")
    env = {
        "RAMPGATE_DATABASE_URL": f"sqlite:///{directory}/catalog.db",
        "RAMPGATE_COUNTER_STORE": "memory",
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAMPGATE_JWT_SECRET": JWT_SECRET,
        "RAMPGATE_CONFIG": str(directory / "absent.toml"),
    }
    with start_server(env) as running:
        response = httpx.patch(
            running.url + "/v1/flags/rate_limit_enforcement",
            json={"enabled": True, "percentage": 100},
            headers=ADMIN,
        )
        assert response.status_code == 200
        yield running


def user(sub: str, language: str | None = None) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    if language is not None:
        headers["Accept-Language"] = language
    return headers


def authorize_upload(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + "/v1/media/upload-authorize", json={}, headers=headers)


def test_upload_sixth_quick_is_429(server: Server) -> None:
    allowed = [authorize_upload(server, user("tier-b-user")) for _ in range(5)]

    blocked = authorize_upload(server, user("tier-b-user"))

    # 12 s when the six requests take less than a second, as on an idle machine.
    seconds = int(blocked.headers["Retry-After"])
    assert [response.status_code for response in allowed] == [200] * 5
    assert allowed[0].headers["RateLimit-Policy"] == '"B.media_upload";q=5;w=60'
    assert allowed[0].headers["RateLimit"] == '"B.media_upload";r=4;t=12'
    assert blocked.status_code == 429
    assert 10 <= seconds <= 12
    assert blocked.headers["RateLimit-Policy"] == '"B.media_upload";q=5;w=60'
    assert blocked.headers["RateLimit"] == f'"B.media_upload";r=0;t={seconds}'
    assert set(blocked.json()) == BLOCKED_FIELDS
    assert blocked.json() == {
        "error": "rate_limited",
        "action": "media_upload",
        "tier": "B",
        "retryAfter": seconds,
        "limit": 5,
        "windowSeconds": 60,
        "message": f"Too many requests. Try again in {seconds} seconds.",
    }


def test_upload_429_message_in_russian(server: Server) -> None:
    for _ in range(5):
        authorize_upload(server, user("russian-user"))

    blocked = authorize_upload(server, user("russian-user", "ru-RU,ru;q=0.9,en;q=0.8"))

    seconds = int(blocked.headers["Retry-After"])
    assert blocked.status_code == 429
    assert 10 <= seconds <= 12
    assert blocked.json()["message"] == f"Слишком много запросов. Повторите попытку через {seconds} секунд."


def test_upload_after_retry_after_succeeds(server: Server) -> None:
    policy = {
        "scope": "actor", "actor_type": "user", "actor_id": "patient-user", "action": "media_upload",
        "limit": 1, "window_seconds": 2,
    }
    assert httpx.put(server.url + "/v1/limits", json=policy, headers=ADMIN).status_code == 200

    first = authorize_upload(server, user("patient-user"))
    blocked = authorize_upload(server, user("patient-user"))
    retry_after = int(blocked.headers["Retry-After"])
    time.sleep(retry_after)
    later = authorize_upload(server, user("patient-user"))

    assert first.status_code == 200
    assert blocked.status_code == 429
    assert retry_after == 2
    assert blocked.headers["RateLimit"] == f'"B.media_upload";r=0;t={retry_after}'
    assert later.status_code == 200


def test_dm_send_blocked_by_suspension(server: Server) -> None:
    profile = {"actor_type": "user", "actor_id": "suspended-user", "tier": "C", "enforcement_level": "E5"}
    assert httpx.put(server.url + "/v1/trust", json=profile, headers=ADMIN).status_code == 200

    response = httpx.post(
        server.url + "/v1/dm/send", json={"target_user_id": "x", "body": "hello"}, headers=user("suspended-user")
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3600"
    assert response.json()["tier"] == "C"
    assert response.json()["message"] == "Your account is temporarily restricted. Try again in 1 hour."


def test_check_agrees_with_protected(server: Server) -> None:
    for _ in range(5):
        authorize_upload(server, user("checked-user"))

    response = httpx.post(
        server.url + "/v1/check",
        json={"actor_type": "user", "actor_id": "checked-user", "action": "media_upload"},
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
    )

    assert response.status_code == 200
    assert response.json()["allowed"] is False
    assert response.json()["reason"] == "limited"
    assert re.fullmatch(r'"B\.media_upload";r=0;t=1[012]', response.headers["RateLimit"])
