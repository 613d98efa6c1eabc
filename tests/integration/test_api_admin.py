"""Admin API over the ASGI app: flags, limits, trust, change history, on SQLite and PostgreSQL catalogs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.service.app import create_app
from rampgate.settings import Settings

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "service-token-for-admin-tests"
ADMIN_TOKEN = "admin-token-for-admin-tests"
READONLY_TOKEN = "readonly-token-for-admin-tests"
SERVICE = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READONLY = {"Authorization": f"Bearer {READONLY_TOKEN}"}
FLAG = "rate_limit_enforcement"


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
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        admin_readonly_token=READONLY_TOKEN,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def check(client: TestClient, actor_id: str, action: str = "media_upload") -> dict:
    response = client.post(
        "/v1/check", json={"actor_type": "user", "actor_id": actor_id, "action": action}, headers=SERVICE
    )
    assert response.status_code == 200
    return response.json()


def test_flags_list_and_get(client: TestClient) -> None:
    listed = client.get("/v1/flags", headers=READONLY)
    one = client.get(f"/v1/flags/{FLAG}", headers=READONLY)

    assert listed.status_code == 200
    assert [flag["name"] for flag in listed.json()] == [FLAG]
    assert one.status_code == 200
    assert one.json() == listed.json()[0]
    assert set(one.json()) == {"name", "enabled", "percentage", "action_percentages", "config"}


@BOTH_CATALOGS
def test_flag_patch_applies_at_once(client: TestClient) -> None:
    assert check(client, "u-1")["mode"] == "shadow"

    response = client.patch(f"/v1/flags/{FLAG}", json={"enabled": True, "percentage": 100}, headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["enabled"] is True
    assert response.json()["percentage"] == 100
    assert check(client, "u-1")["mode"] == "enforce"


def test_flag_patch_merges_action_percentages(client: TestClient) -> None:
    client.patch(f"/v1/flags/{FLAG}", json={"action_percentages": {"media_upload": 50}}, headers=ADMIN)
    response = client.patch(f"/v1/flags/{FLAG}", json={"action_percentages": {"search": 10}}, headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["action_percentages"] == {"media_upload": 50, "search": 10}


def test_flag_patch_null_removes_action_percentage(client: TestClient) -> None:
    client.patch(f"/v1/flags/{FLAG}", json={"action_percentages": {"media_upload": 50, "search": 20}}, headers=ADMIN)

    response = client.patch(f"/v1/flags/{FLAG}", json={"action_percentages": {"media_upload": None}}, headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["action_percentages"] == {"search": 20}


def test_flag_patch_ungoverned_action_rejected(client: TestClient) -> None:
    response = client.patch(f"/v1/flags/{FLAG}", json={"action_percentages": {"zzz": 5}}, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["value"] == "zzz"
    assert client.get(f"/v1/flags/{FLAG}", headers=ADMIN).json()["action_percentages"] == {}


def test_flag_patch_empty_changes_nothing(client: TestClient) -> None:
    before = client.get(f"/v1/flags/{FLAG}", headers=ADMIN).json()

    response = client.patch(f"/v1/flags/{FLAG}", json={}, headers=ADMIN)

    assert response.status_code == 200
    assert response.json() == before
    assert client.get("/v1/changes", headers=ADMIN).json() == []


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ({"percentage": 101}, "percentage", 101),
        ({"percentage": -1}, "percentage", -1),
        ({"percentage": "50"}, "percentage", "50"),
        ({"enabled": "yes"}, "enabled", "yes"),
        ({"action_percentages": {"media_upload": 101}}, "action_percentages.media_upload", 101),
        ({"percentag": 5}, "percentag", 5),
    ],
)
def test_flag_patch_invalid_rejected(client: TestClient, body: dict, field: str, value: object) -> None:
    response = client.patch(f"/v1/flags/{FLAG}", json={"enabled": True, **body}, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == field
    assert response.json()["value"] == value
    assert client.get(f"/v1/flags/{FLAG}", headers=ADMIN).json()["enabled"] is False
    assert client.get("/v1/changes", headers=ADMIN).json() == []


@pytest.mark.parametrize(("percentage", "shown"), [("1e400", "Infinity"), ("NaN", "NaN"), ("-Infinity", "-Infinity")])
def test_flag_patch_non_finite_rejected(client: TestClient, percentage: str, shown: str) -> None:
    content = f'{{"enabled": true, "percentage": {percentage}}}'.encode()

    response = client.patch(f"/v1/flags/{FLAG}", content=content, headers={**ADMIN, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["field"] == "percentage"
    assert response.json()["value"] == shown
    assert client.get(f"/v1/flags/{FLAG}", headers=ADMIN).json()["enabled"] is False


def test_flag_patch_unknown_is_404(client: TestClient) -> None:
    response = client.patch("/v1/flags/no_such_flag", json={"enabled": True}, headers=ADMIN)

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@BOTH_CATALOGS
def test_flag_rollback_clears_everything(client: TestClient) -> None:
    client.patch(
        f"/v1/flags/{FLAG}",
        json={"enabled": True, "percentage": 25, "action_percentages": {"media_upload": 50}},
        headers=ADMIN,
    )

    response = client.post(f"/v1/flags/{FLAG}/rollback", headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["enabled"] is False
    assert response.json()["percentage"] == 0
    assert response.json()["action_percentages"] == {}
    assert response.json()["config"]["actions"]
    assert check(client, "u-1")["mode"] == "shadow"


@BOTH_CATALOGS
def test_limits_put_inserts_and_updates(client: TestClient) -> None:
    body = {"scope": "tier", "tier": "B", "action": "upload_video", "limit": 3, "window_seconds": 30}

    created = client.put("/v1/limits", json=body, headers=ADMIN)
    updated = client.put("/v1/limits", json={**body, "limit": 4, "burst": 6}, headers=ADMIN)

    assert created.status_code == 200
    assert created.json()["policy"] == "tier:B:upload_video"
    assert updated.status_code == 200
    assert updated.json()["config_id"] == created.json()["config_id"]
    assert updated.json()["limit"] == 4
    assert updated.json()["burst"] == 6
    listed = client.get("/v1/limits", params={"action": "upload_video"}, headers=READONLY).json()
    assert [policy["limit"] for policy in listed] == [4]


def test_limits_put_applies_at_once(client: TestClient) -> None:
    client.put(
        "/v1/limits",
        json={"scope": "actor", "actor_type": "user", "actor_id": "u-7", "action": "media_upload",
              "limit": 2, "window_seconds": 60},
        headers=ADMIN,
    )

    decision = check(client, "u-7")

    assert decision["policy"] == "actor:user/u-7:media_upload"
    assert decision["limit"] == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"window_seconds": 0}, "window_seconds"),
        ({"burst": 0}, "burst"),
        ({"algorithm": "leaky"}, "algorithm"),
        ({"fail_mode": "maybe"}, "fail_mode"),
        ({"action": "Bad Action"}, "action"),
        ({"tier": None}, "tier"),
        ({"actor_id": "u-1"}, "actor_id"),
        ({"scope": "galaxy"}, "scope"),
    ],
)
def test_limits_put_invalid_rejected(client: TestClient, change: dict, field: str) -> None:
    body = {"scope": "tier", "tier": "B", "action": "media_upload", "limit": 1, "window_seconds": 2, **change}

    response = client.put("/v1/limits", json=body, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == field
    policies = client.get("/v1/limits", params={"action": "media_upload", "tier": "B"}, headers=ADMIN).json()
    assert [(policy["limit"], policy["window_seconds"]) for policy in policies] == [(5, 60)]


@BOTH_CATALOGS
def test_limits_put_non_finite_rejected(client: TestClient) -> None:
    content = b'{"scope": "tier", "tier": "B", "action": "media_upload", "limit": 1e400, "window_seconds": 2}'

    response = client.put("/v1/limits", content=content, headers={**ADMIN, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["field"] == "limit"
    assert response.json()["value"] == "Infinity"


def test_limits_delete(client: TestClient) -> None:
    created = client.put(
        "/v1/limits", json={"scope": "global", "action": "upload_video", "limit": 3, "window_seconds": 30},
        headers=ADMIN,
    ).json()

    deleted = client.delete(f"/v1/limits/{created['config_id']}", headers=ADMIN)
    again = client.delete(f"/v1/limits/{created['config_id']}", headers=ADMIN)

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert client.get("/v1/limits", params={"action": "upload_video"}, headers=ADMIN).json() == []
    assert check(client, "u-1", "upload_video")["reason"] == "no_policy"


def test_limits_list_invalid_filter_rejected(client: TestClient) -> None:
    response = client.get("/v1/limits", params={"tier": "Z"}, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == "tier"


@BOTH_CATALOGS
def test_trust_put_list_delete(client: TestClient) -> None:
    put = client.put(
        "/v1/trust",
        json={"actor_type": "user", "actor_id": "u-9", "tier": "D", "enforcement_level": "E5", "trust_score": 3.5},
        headers=ADMIN,
    )
    suspended = check(client, "u-9")
    listed = client.get("/v1/trust", headers=READONLY)
    deleted = client.delete("/v1/trust/user/u-9", headers=ADMIN)
    missing = client.delete("/v1/trust/user/u-9", headers=ADMIN)

    assert put.status_code == 200
    assert put.json() == {
        "actor_type": "user", "actor_id": "u-9", "tier": "D", "enforcement_level": "E5",
        "trust_score": 3.5, "signals": {},
    }
    assert suspended["tier"] == "D"
    assert suspended["reason"] == "suspended"
    assert [profile["actor_id"] for profile in listed.json()] == ["u-9"]
    assert deleted.status_code == 204
    assert missing.status_code == 404
    assert check(client, "u-9")["tier"] == "B"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tier": "E"}, "tier"),
        ({"enforcement_level": "E9"}, "enforcement_level"),
        ({"trust_score": 101}, "trust_score"),
        ({"actor_id": "x" * 10_000}, "actor_id"),
        ({"actor_id": ""}, "actor_id"),
        ({"actor_type": "robot"}, "actor_type"),
    ],
)
def test_trust_put_invalid_rejected(client: TestClient, change: dict, field: str) -> None:
    body = {"actor_type": "user", "actor_id": "u-9", "tier": "A", **change}

    response = client.put("/v1/trust", json=body, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == field
    assert len(str(response.json()["value"])) <= 80
    assert client.get("/v1/trust", headers=ADMIN).json() == []


@pytest.mark.parametrize("score", ["NaN", "Infinity", "1e400"])
def test_trust_put_non_finite_rejected(client: TestClient, score: str) -> None:
    content = f'{{"actor_type": "user", "actor_id": "u-9", "tier": "A", "trust_score": {score}}}'.encode()

    response = client.put("/v1/trust", content=content, headers={**ADMIN, "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["field"] == "trust_score"
    assert client.get("/v1/trust", headers=ADMIN).json() == []


@BOTH_CATALOGS
def test_trust_delete_nul_actor_id_is_422(client: TestClient) -> None:
    response = client.delete("/v1/trust/user/a%00b", headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == "actor_id"
    assert "NUL" in response.json()["message"]


@pytest.mark.parametrize("report", ["top-blocked", "by-action", "by-hour", "recent", "timeseries"])
@pytest.mark.parametrize("since", ["99999999999d", "64000000000"])
def test_reports_since_over_100_years_is_422(client: TestClient, report: str, since: str) -> None:
    response = client.get(f"/v1/reports/{report}", params={"since": since}, headers=READONLY)

    assert response.status_code == 422
    assert response.json()["field"] == "since"
    assert "at most 100 years" in response.json()["message"]


@BOTH_CATALOGS
def test_changes_record_who_and_what(client: TestClient) -> None:
    client.patch(f"/v1/flags/{FLAG}", json={"enabled": True, "percentage": 10}, headers=ADMIN)
    client.put("/v1/trust", json={"actor_type": "user", "actor_id": "u-3", "tier": "A"}, headers=ADMIN)

    changes = client.get("/v1/changes", headers=READONLY).json()
    flag_changes = client.get("/v1/changes", params={"entity": "flag"}, headers=READONLY).json()

    assert [(c["entity"], c["key"]) for c in changes] == [("trust", "user:u-3"), ("flag", FLAG)]
    assert all(c["changed_by"] == "admin" and c["via"] == "api" for c in changes)
    assert changes[1]["before"]["enabled"] is False
    assert changes[1]["after"]["percentage"] == 10
    assert changes[0]["before"] is None
    assert [c["entity"] for c in flag_changes] == ["flag"]


def test_malformed_json_rejected(client: TestClient) -> None:
    response = client.put(
        "/v1/limits", content=b'{"scope": "tier",', headers={**ADMIN, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == "body"


def test_undecodable_body_rejected(client: TestClient) -> None:
    response = client.patch(
        f"/v1/flags/{FLAG}", content=b'{"percentage": "\xc3"}', headers={**ADMIN, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert response.json()["field"] == "body"
    assert "not valid UTF-8" in response.json()["message"]


def test_flag_patch_same_values_not_recorded(client: TestClient) -> None:
    client.patch(f"/v1/flags/{FLAG}", json={"enabled": True, "percentage": 10}, headers=ADMIN)

    repeated = client.patch(f"/v1/flags/{FLAG}", json={"enabled": True, "percentage": 10}, headers=ADMIN)

    assert repeated.status_code == 200
    assert len(client.get("/v1/changes", params={"entity": "flag"}, headers=ADMIN).json()) == 1


def test_flag_patch_ungoverned_action_names_field(client: TestClient) -> None:
    response = client.patch(f"/v1/flags/{FLAG}", json={"action_percentages": {"zzz": 5}}, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == "action_percentages.zzz"
