"""The console's routes in process: headers, static files, sign-in checks and sign-out, without a browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_helpers import ADMIN_TOKEN, READONLY_TOKEN, SERVICE_TOKEN
from fastapi.testclient import TestClient

from rampgate.service.app import create_app
from rampgate.service.console import routes
from rampgate.settings import Settings


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app without its lifespan: the console's routes need no gate."""
    monkeypatch.setattr(routes, "throttle", routes.SignInThrottle(3, 60.0))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        admin_token=ADMIN_TOKEN,
        admin_readonly_token=READONLY_TOKEN,
        service_token=SERVICE_TOKEN,
    )
    yield TestClient(create_app(settings), base_url="http://127.0.0.1")


def sign_in(client: TestClient, token: str) -> None:
    response = client.post("/console/session", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text


def test_console_page_sign_in_form(client: TestClient) -> None:
    response = client.get("/console")

    assert response.status_code == 200
    assert 'name="token"' in response.text
    assert 'type="password"' in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_console_page_signed_in(client: TestClient) -> None:
    sign_in(client, ADMIN_TOKEN)

    response = client.get("/console")

    assert 'name="csrf-token"' in response.text
    assert 'data-role="admin"' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


def test_sign_in_cookie_attributes(client: TestClient) -> None:
    response = client.post("/console/session", data={"token": READONLY_TOKEN}, follow_redirects=False)

    cookie = response.headers["set-cookie"]
    assert cookie.startswith("rampgate_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie
    assert READONLY_TOKEN not in cookie
    assert response.headers["location"] == "/console"


def test_sign_in_service_token_rejected(client: TestClient) -> None:
    response = client.post("/console/session", data={"token": SERVICE_TOKEN}, follow_redirects=False)

    assert response.status_code == 401
    assert "Invalid token" in response.text
    assert "set-cookie" not in response.headers


def test_sign_in_throttled_after_failures(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/console/session", data={"token": "wrong"}).status_code == 401

    response = client.post("/console/session", data={"token": ADMIN_TOKEN}, follow_redirects=False)

    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "set-cookie" not in response.headers


def test_sign_out_needs_csrf_token(client: TestClient) -> None:
    sign_in(client, ADMIN_TOKEN)

    rejected = client.post("/console/signout", data={"csrf_token": "wrong"}, follow_redirects=False)
    page = client.get("/console").text
    csrf = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    accepted = client.post("/console/signout", data={"csrf_token": csrf}, follow_redirects=False)

    assert rejected.status_code == 403
    assert accepted.status_code == 303
    assert 'rampgate_session=""' in accepted.headers["set-cookie"]


def test_static_asset_served(client: TestClient) -> None:
    response = client.get("/console/static/js/main.js")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/console/static/%2e%2e/routes.py", "/console/static/..%2f__init__.py", "/console/static/missing.js"])
def test_static_asset_outside_folder_not_found(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 404
    assert "import" not in response.text
