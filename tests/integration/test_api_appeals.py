"""Appeals: filed by end users over HTTP, judged over HTTP and from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient

from rampgate.catalog.appeals import AppealRepository
from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.service.app import create_app
from rampgate.settings import Settings

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-for-appeal-tests"
READONLY_TOKEN = "readonly-token-for-appeal-tests"
JWT_SECRET = "jwt-secret-for-appeal-tests-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READONLY = {"Authorization": f"Bearer {READONLY_TOKEN}"}
APPEAL_FIELDS = {
    "appeal_id", "actor_type", "actor_id", "action", "request_id", "text", "status", "created_at",
    "resolved_at", "resolved_by", "resolution_note",
}


# Every test runs on SQLite; those marked with this run on PostgreSQL as well.
BOTH_CATALOGS = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path}/catalog.db"
    url = request.getfixturevalue("postgres_url")
    engine = create_catalog_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        counter_store="memory",
        service_token="service-token-for-appeal-tests",
        admin_token=ADMIN_TOKEN,
        admin_readonly_token=READONLY_TOKEN,
        jwt_secret=JWT_SECRET,
    )
    with TestClient(create_app(settings)) as test_client:
        test_client.patch(
            "/v1/flags/rate_limit_enforcement", json={"enabled": True, "percentage": 100}, headers=ADMIN
        )
        test_client.put(
            "/v1/limits",
            json={"scope": "tier", "tier": "B", "action": "media_upload", "limit": 1, "window_seconds": 60},
            headers=ADMIN,
        )
        yield test_client


def user(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 300}, JWT_SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def get_blocked(client: TestClient, sub: str) -> str:
    """Upload until the user is blocked; return the blocked request's id."""
    client.post("/v1/media/upload-authorize", json={}, headers=user(sub))
    blocked = client.post("/v1/media/upload-authorize", json={}, headers=user(sub))
    assert blocked.status_code == 429
    return blocked.headers["X-Request-ID"]


def file_appeal(client: TestClient, sub: str, **fields: object) -> object:
    body: dict[str, object] = {"action": "media_upload", "text": "I was uploading my own photos."}
    body.update(fields)
    return client.post("/v1/appeals", json=body, headers=user(sub))


@BOTH_CATALOGS
def test_appeal_filed_after_block(client: TestClient) -> None:
    request_id = get_blocked(client, "alice")

    response = file_appeal(client, "alice", request_id=request_id)

    assert response.status_code == 201
    assert set(response.json()) == APPEAL_FIELDS
    assert response.json()["actor_type"] == "user"
    assert response.json()["actor_id"] == "alice"
    assert response.json()["status"] == "open"
    assert response.json()["request_id"] == request_id
    assert response.json()["created_at"].endswith("Z")


@BOTH_CATALOGS
def test_appeal_without_block_rejected(client: TestClient) -> None:
    client.post("/v1/media/upload-authorize", json={}, headers=user("bob"))

    response = file_appeal(client, "bob")

    assert response.status_code == 422
    assert response.json()["field"] == "action"
    assert client.get("/v1/appeals", headers=ADMIN).json() == []


@BOTH_CATALOGS
def test_appeal_second_open_is_409(client: TestClient) -> None:
    get_blocked(client, "carol")
    first = file_appeal(client, "carol")

    second = file_appeal(client, "carol")

    assert first.status_code == 201
    assert second.status_code == 409
    assert str(first.json()["appeal_id"]) in second.json()["message"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"text": ""}, "text"), ({"text": "x" * 2001}, "text"), ({"action": "Media Upload"}, "action"),
     ({"request_id": "r" * 129}, "request_id"), ({"text": None}, "text")],
)
def test_appeal_invalid_rejected(client: TestClient, fields: dict, field: str) -> None:
    get_blocked(client, "dave")

    response = file_appeal(client, "dave", **fields)

    assert response.status_code == 422
    assert response.json()["field"] == field


def test_appeal_needs_user_jwt(client: TestClient) -> None:
    no_token = client.post("/v1/appeals", json={"action": "media_upload", "text": "hi"})
    admin_token = client.post("/v1/appeals", json={"action": "media_upload", "text": "hi"}, headers=ADMIN)

    assert no_token.status_code == 401
    assert admin_token.status_code == 401


@BOTH_CATALOGS
def test_appeal_uphold_and_reject(client: TestClient) -> None:
    get_blocked(client, "erin")
    get_blocked(client, "frank")
    erin = file_appeal(client, "erin").json()
    frank = file_appeal(client, "frank").json()

    upheld = client.post(f"/v1/appeals/{erin['appeal_id']}/uphold", json={"note": "legitimate"}, headers=ADMIN)
    rejected = client.post(f"/v1/appeals/{frank['appeal_id']}/reject", headers=ADMIN)
    again = client.post(f"/v1/appeals/{erin['appeal_id']}/reject", json={}, headers=ADMIN)

    assert upheld.status_code == 200
    assert upheld.json()["status"] == "upheld"
    assert upheld.json()["resolved_by"] == "admin"
    assert upheld.json()["resolution_note"] == "legitimate"
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["resolution_note"] is None
    assert again.status_code == 409
    repository = AppealRepository(client.app.state.gate.engine)  # type: ignore[attr-defined]
    assert repository.known_legitimate_actors() == {("user", "erin")}


def test_appeal_list_filters_by_status(client: TestClient) -> None:
    get_blocked(client, "gina")
    get_blocked(client, "hank")
    gina = file_appeal(client, "gina").json()
    file_appeal(client, "hank")
    client.post(f"/v1/appeals/{gina['appeal_id']}/uphold", headers=ADMIN)

    every = client.get("/v1/appeals", headers=READONLY).json()
    open_only = client.get("/v1/appeals", params={"status": "open"}, headers=READONLY).json()
    bad = client.get("/v1/appeals", params={"status": "pending"}, headers=READONLY)

    assert [appeal["actor_id"] for appeal in every] == ["hank", "gina"]
    assert [appeal["actor_id"] for appeal in open_only] == ["hank"]
    assert bad.status_code == 422
    assert bad.json()["field"] == "status"


def test_appeal_verdict_in_history(client: TestClient) -> None:
    get_blocked(client, "ivan")
    appeal = file_appeal(client, "ivan").json()
    client.post(f"/v1/appeals/{appeal['appeal_id']}/uphold", headers=ADMIN)

    change = client.get("/v1/changes", params={"entity": "appeal"}, headers=ADMIN).json()[0]

    assert change["key"] == str(appeal["appeal_id"])
    assert change["changed_by"] == "admin"
    assert change["before"]["status"] == "open"
    assert change["after"]["status"] == "upheld"


def test_appeal_unknown_is_404(client: TestClient) -> None:
    response = client.post("/v1/appeals/999999/uphold", headers=ADMIN)

    assert response.status_code == 404


def test_appeal_readonly_verdict_is_403(client: TestClient) -> None:
    get_blocked(client, "jill")
    appeal = file_appeal(client, "jill").json()

    response = client.post(f"/v1/appeals/{appeal['appeal_id']}/uphold", headers=READONLY)

    assert response.status_code == 403
    assert client.get("/v1/appeals", headers=ADMIN).json()[0]["status"] == "open"


def rampgate(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("rampgate")
    env = {**os.environ, "RAMPGATE_DATABASE_URL": database_url, "RAMPGATE_CONFIG": "/nonexistent/rampgate.toml"}
    return subprocess.run([str(executable), *args], env=env, capture_output=True, text=True, timeout=60)


def test_appeal_cli_file_list_uphold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.db"
    assert rampgate(url, "migrate").returncode == 0

    filed = rampgate(url, "appeal", "file", "--actor", "user:kim", "--action", "media_upload", "--text", "ticket 7", "--json")
    appeal_id = json.loads(filed.stdout)["appeal_id"]
    listed = rampgate(url, "appeal", "list", "--status", "open", "--json")
    upheld = rampgate(url, "appeal", "uphold", str(appeal_id), "--note", "checked", "--json")
    again = rampgate(url, "appeal", "reject", str(appeal_id))
    invalid = rampgate(url, "appeal", "list", "--status", "pending")

    assert filed.returncode == 0
    assert [appeal["actor_id"] for appeal in json.loads(listed.stdout)] == ["kim"]
    assert json.loads(upheld.stdout)["status"] == "upheld"
    assert json.loads(upheld.stdout)["resolved_by"].startswith("cli:")
    assert again.returncode == 1
    assert "already upheld" in again.stderr
    assert invalid.returncode == 2
    assert "--status" in invalid.stderr
