"""Authentication over the ASGI app: bearer tokens, roles, console sessions with CSRF, end-user JWTs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from rampgate.service.app import create_app
from rampgate.service.auth import SESSION_COOKIE, create_session_cookie, csrf_token_for
from rampgate.settings import Settings

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "service-token-for-auth-tests"
ADMIN_TOKEN = "admin-token-for-auth-tests"
READONLY_TOKEN = "readonly-token-for-auth-tests"
JWT_SECRET = "jwt-secret-for-auth-tests-0123456789abcdef"
FLAG_PATH = "/v1/flags/rate_limit_enforcement"
CHECK_BODY = {"actor_type": "user", "actor_id": "u-1", "action": "search"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path}/catalog.db",
        "counter_store": "memory",
        "service_token": SERVICE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "admin_readonly_token": READONLY_TOKEN,
        "jwt_secret": JWT_SECRET,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def user_token(key: object = JWT_SECRET, algorithm: str = "HS256", **claims: object) -> str:
    payload: dict[str, object] = {"sub": "alice", "exp": int(time.time()) + 300}
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm)  # type: ignore[arg-type]


def handmade_token(header: dict, payload: dict, signing_key: bytes | None) -> str:
    """Build a JWT by hand, so that forbidden combinations PyJWT refuses to encode can be sent."""

    def encode(part: bytes) -> str:
        return base64.urlsafe_b64encode(part).rstrip(b"=").decode()

    signing_input = f"{encode(json.dumps(header).encode())}.{encode(json.dumps(payload).encode())}"
    signature = b"" if signing_key is None else hmac.new(signing_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{encode(signature)}"


def upload(client: TestClient, token: str) -> int:
    return client.post("/v1/media/upload-authorize", json={}, headers=bearer(token)).status_code


# -- bearer tokens ----------------------------------------------------------------


def test_check_without_token_is_401(client: TestClient) -> None:
    response = client.post("/v1/check", json=CHECK_BODY)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Basic c2VydmljZTp0b2tlbg==", "Bearer", SERVICE_TOKEN])
def test_check_wrong_token_is_401(client: TestClient, header: str) -> None:
    response = client.post("/v1/check", json=CHECK_BODY, headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_check_accepts_service_and_admin(client: TestClient) -> None:
    assert client.post("/v1/check", json=CHECK_BODY, headers=bearer(SERVICE_TOKEN)).status_code == 200
    assert client.post("/v1/check", json=CHECK_BODY, headers=bearer(ADMIN_TOKEN)).status_code == 200


def test_check_readonly_token_is_403(client: TestClient) -> None:
    response = client.post("/v1/check", json=CHECK_BODY, headers=bearer(READONLY_TOKEN))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/flags", None),
        ("GET", "/v1/limits", None),
        ("GET", "/v1/trust", None),
        ("GET", "/v1/changes", None),
        ("GET", "/v1/appeals", None),
        ("GET", "/metrics", None),
        ("PATCH", FLAG_PATH, {"enabled": True}),
        ("PUT", "/v1/trust", {"actor_type": "user", "actor_id": "u", "tier": "A"}),
    ],
)
def test_admin_without_token_is_401(client: TestClient, method: str, path: str, body: dict | None) -> None:
    missing = client.request(method, path, json=body)
    wrong = client.request(method, path, json=body, headers=bearer("not-a-token"))

    assert missing.status_code == 401
    assert wrong.status_code == 401


def test_admin_service_token_is_403(client: TestClient) -> None:
    assert client.get("/v1/flags", headers=bearer(SERVICE_TOKEN)).status_code == 403
    assert client.get("/metrics", headers=bearer(SERVICE_TOKEN)).status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", FLAG_PATH, {"percentage": 10}),
        ("POST", FLAG_PATH + "/rollback", None),
        ("PUT", "/v1/limits", {"scope": "global", "action": "search", "limit": 1, "window_seconds": 1}),
        ("DELETE", "/v1/limits/1", None),
        ("PUT", "/v1/trust", {"actor_type": "user", "actor_id": "u", "tier": "A"}),
        ("DELETE", "/v1/trust/user/u", None),
        ("POST", "/v1/appeals/1/uphold", {}),
        ("POST", "/v1/appeals/1/reject", {}),
    ],
)
def test_readonly_change_is_403(client: TestClient, method: str, path: str, body: dict | None) -> None:
    response = client.request(method, path, json=body, headers=bearer(READONLY_TOKEN))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert client.get("/v1/changes", headers=bearer(ADMIN_TOKEN)).json() == []


def test_readonly_token_reads(client: TestClient) -> None:
    assert client.get("/v1/flags", headers=bearer(READONLY_TOKEN)).status_code == 200
    assert client.get("/metrics", headers=bearer(READONLY_TOKEN)).status_code == 200


def test_open_endpoints_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_tokens_unset_leave_api_open(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, service_token=None, admin_token=None, admin_readonly_token=None)

    with TestClient(create_app(settings), base_url="http://127.0.0.1:8080") as open_client:
        checked = open_client.post("/v1/check", json=CHECK_BODY)
        patched = open_client.patch(FLAG_PATH, json={"percentage": 1})
        changes = open_client.get("/v1/changes").json()

    assert checked.status_code == 200
    assert patched.status_code == 200
    assert changes[0]["changed_by"] == "anonymous"


def test_open_admin_rejects_cross_origin(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_token=None, admin_readonly_token=None)

    with TestClient(create_app(settings), base_url="http://127.0.0.1:8080") as open_client:
        foreign = open_client.post(FLAG_PATH + "/rollback", headers={"Origin": "https://attacker.example"})
        sandboxed = open_client.post(FLAG_PATH + "/rollback", headers={"Origin": "null"})
        same = open_client.post(FLAG_PATH + "/rollback", headers={"Origin": "http://127.0.0.1:8080"})

    assert foreign.status_code == 403
    assert sandboxed.status_code == 403
    assert same.status_code == 200


# -- console sessions -------------------------------------------------------------


def test_session_cookie_reads(client: TestClient, settings: Settings) -> None:
    cookie, _csrf = create_session_cookie("readonly", settings)
    client.cookies.set(SESSION_COOKIE, cookie)

    assert client.get("/v1/flags").status_code == 200


def test_session_change_needs_csrf(client: TestClient, settings: Settings) -> None:
    cookie, csrf = create_session_cookie("admin", settings)
    client.cookies.set(SESSION_COOKIE, cookie)

    without = client.patch(FLAG_PATH, json={"percentage": 5})
    wrong = client.patch(FLAG_PATH, json={"percentage": 5}, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
    right = client.patch(FLAG_PATH, json={"percentage": 5}, headers={"X-CSRF-Token": csrf})

    assert without.status_code == 403
    assert wrong.status_code == 403
    assert right.status_code == 200
    assert csrf_token_for(cookie, settings) == csrf
    change = client.get("/v1/changes").json()[0]
    assert change["changed_by"] == "admin"
    assert change["via"] == "console"


def test_session_readonly_change_is_403(client: TestClient, settings: Settings) -> None:
    cookie, csrf = create_session_cookie("readonly", settings)
    client.cookies.set(SESSION_COOKIE, cookie)

    response = client.patch(FLAG_PATH, json={"percentage": 5}, headers={"X-CSRF-Token": csrf})

    assert response.status_code == 403


@pytest.mark.parametrize("tamper", ["expired", "forged_role", "other_key", "garbage"])
def test_session_invalid_cookie_is_401(client: TestClient, settings: Settings, tmp_path: Path, tamper: str) -> None:
    if tamper == "expired":
        cookie, _ = create_session_cookie("admin", settings, now=time.time() - 10, seconds=5)
    elif tamper == "forged_role":
        cookie, _ = create_session_cookie("readonly", settings)
        cookie = "admin" + cookie[len("readonly"):]
    elif tamper == "other_key":
        cookie, _ = create_session_cookie("admin", make_settings(tmp_path, admin_token="another-admin-token"))
    else:
        cookie = "admin.notanumber.x.y"
    client.cookies.set(SESSION_COOKIE, cookie)

    assert client.get("/v1/flags").status_code == 401


def test_session_accepted_by_other_app(settings: Settings) -> None:
    """A cookie issued by one worker is accepted by another built from the same settings."""
    cookie, _ = create_session_cookie("admin", create_app(settings).state.settings)

    with TestClient(create_app(settings)) as other:
        other.cookies.set(SESSION_COOKIE, cookie)
        assert other.get("/v1/flags").status_code == 200


def test_bearer_wins_over_cookie(client: TestClient, settings: Settings) -> None:
    cookie, _ = create_session_cookie("admin", settings)
    client.cookies.set(SESSION_COOKIE, cookie)

    response = client.patch(FLAG_PATH, json={"percentage": 5}, headers=bearer(READONLY_TOKEN))

    assert response.status_code == 403


# -- end-user JWTs ----------------------------------------------------------------


def test_jwt_hs256_valid_accepted(client: TestClient) -> None:
    assert upload(client, user_token()) == 200


@pytest.mark.parametrize(
    "claims",
    [{"exp": int(time.time()) - 60}, {"exp": None}, {"sub": None}, {"sub": ""}, {"sub": "x" * 300}],
    ids=["expired", "no_exp", "no_sub", "empty_sub", "long_sub"],
)
def test_jwt_bad_claims_is_401(client: TestClient, claims: dict) -> None:
    assert upload(client, user_token(**claims)) == 401


def test_jwt_wrong_secret_is_401(client: TestClient) -> None:
    assert upload(client, user_token(key="another-secret-0123456789abcdef0123")) == 401


def test_jwt_alg_none_is_401(client: TestClient) -> None:
    payload = {"sub": "alice", "exp": int(time.time()) + 300}
    unsigned = handmade_token({"alg": "none", "typ": "JWT"}, payload, None)
    pyjwt_unsigned = jwt.encode(payload, None, algorithm="none")  # type: ignore[arg-type]

    assert upload(client, unsigned) == 401
    assert upload(client, pyjwt_unsigned) == 401
    assert upload(client, unsigned.rsplit(".", 1)[0] + ".") == 401


def test_jwt_hs256_without_signature_is_401(client: TestClient) -> None:
    payload = {"sub": "alice", "exp": int(time.time()) + 300}
    signed = handmade_token({"alg": "HS256", "typ": "JWT"}, payload, JWT_SECRET.encode())

    assert upload(client, signed) == 200
    assert upload(client, signed.rsplit(".", 1)[0] + ".") == 401
    assert upload(client, signed.rsplit(".", 1)[0]) == 401


def test_jwt_rs256_when_secret_configured_is_401(client: TestClient, rsa_key: rsa.RSAPrivateKey) -> None:
    assert upload(client, user_token(key=rsa_key, algorithm="RS256")) == 401


def test_jwt_not_configured_is_401(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, jwt_secret=None))) as no_jwt:
        response = no_jwt.post("/v1/media/upload-authorize", json={}, headers=bearer(user_token()))

    assert response.status_code == 401
    assert "RAMPGATE_JWT_SECRET" in response.json()["message"]


def test_jwt_rs256_accepts_and_rejects(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    key_file = tmp_path / "public.pem"
    key_file.write_text(pem)
    payload = {"sub": "alice", "exp": int(time.time()) + 300}
    hs256_with_public_key = handmade_token({"alg": "HS256", "typ": "JWT"}, payload, pem.encode())

    for configured in (pem, str(key_file)):
        settings = make_settings(tmp_path, jwt_secret=None, jwt_public_key=configured)
        with TestClient(create_app(settings)) as rs_client:
            assert upload(rs_client, user_token(key=rsa_key, algorithm="RS256")) == 200
            assert upload(rs_client, hs256_with_public_key) == 401
            assert upload(rs_client, user_token()) == 401
            assert upload(rs_client, user_token(key=rsa_key, algorithm="RS256", exp=int(time.time()) - 60)) == 401


def test_jwt_audience_and_issuer_checked(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, jwt_audience="rampgate-tests", jwt_issuer="https://issuer.test")

    with TestClient(create_app(settings)) as strict:
        good = user_token(aud="rampgate-tests", iss="https://issuer.test")
        assert upload(strict, good) == 200
        assert upload(strict, user_token(aud="someone-else", iss="https://issuer.test")) == 401
        assert upload(strict, user_token(aud="rampgate-tests", iss="https://evil.test")) == 401
        assert upload(strict, user_token(iss="https://issuer.test")) == 401
        assert upload(strict, user_token(aud="rampgate-tests")) == 401


def test_jwt_audience_unset_ignores_aud(client: TestClient) -> None:
    assert upload(client, user_token(aud="anything")) == 200


def test_jwt_service_token_on_protected_is_401(client: TestClient) -> None:
    assert upload(client, SERVICE_TOKEN) == 401


@pytest.mark.parametrize("host", ["evil.example:8080", "testserver", "192.0.2.10"])
def test_open_api_rejects_rebound_host(tmp_path: Path, host: str) -> None:
    settings = make_settings(tmp_path, service_token=None, admin_token=None, admin_readonly_token=None)

    with TestClient(create_app(settings), base_url=f"http://{host}") as open_client:
        checked = open_client.post("/v1/check", json=CHECK_BODY)
        read = open_client.get(FLAG_PATH)
        patched = open_client.patch(FLAG_PATH, json={"percentage": 100}, headers={"Origin": f"http://{host}"})

    assert (checked.status_code, read.status_code, patched.status_code) == (403, 403, 403)
    assert "RAMPGATE_ADMIN_TOKEN" in patched.json()["message"]


@pytest.mark.parametrize("host", ["localhost:8080", "127.0.0.1", "[::1]:8080"])
def test_open_api_serves_loopback_names(tmp_path: Path, host: str) -> None:
    settings = make_settings(tmp_path, service_token=None, admin_token=None, admin_readonly_token=None)

    with TestClient(create_app(settings), base_url=f"http://{host}") as open_client:
        checked = open_client.post("/v1/check", json=CHECK_BODY)
        read = open_client.get(FLAG_PATH)

    assert (checked.status_code, read.status_code) == (200, 200)


def test_service_token_change_names_its_use(client: TestClient) -> None:
    response = client.patch(FLAG_PATH, json={"percentage": 5}, headers=bearer(SERVICE_TOKEN))

    assert response.status_code == 403
    assert "may only ask for decisions" in response.json()["message"]
