"""Rollout, status and report endpoints over the ASGI app, with the admin and read-only tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from rampgate.service.app import create_app
from rampgate.settings import Settings

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-token-for-rollout-tests"}
READONLY = {"Authorization": "Bearer readonly-token-for-rollout-tests"}
FLAG = "rate_limit_enforcement"
PLAN = {"min_decisions": 5, "stages": [{"percentage": 5, "bake": "1h"}, {"percentage": 100}]}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/catalog.db",
        counter_store="memory",
        service_token="service-token-for-rollout-tests",
        admin_token="admin-token-for-rollout-tests",
        admin_readonly_token="readonly-token-for-rollout-tests",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_api_status_without_rollout(client: TestClient) -> None:
    response = client.get("/v1/status", headers=READONLY)

    assert response.status_code == 200
    document = response.json()
    assert set(document) == {"flag", "rollout", "checklist"}
    assert document["flag"] == {"name": FLAG, "enabled": False, "percentage": 0, "action_percentages": {}}
    assert document["rollout"]["state"] == "none"
    assert [step["at"] for step in document["checklist"]] == [None] * 5


def test_api_start_and_status(client: TestClient) -> None:
    response = client.post(f"/v1/rollouts/{FLAG}/start", json={"plan": PLAN}, headers=ADMIN)

    assert response.status_code == 200
    rollout = response.json()
    assert rollout["flag"] == FLAG
    assert rollout["state"] == "running"
    assert rollout["percentage"] == 5
    assert rollout["bake_left_seconds"] == pytest.approx(3600, abs=2)
    status = client.get("/v1/status", headers=READONLY).json()
    assert status["flag"]["enabled"] is True
    assert status["flag"]["percentage"] == 5
    assert set(status["rollout"]) == {
        "state", "stage", "percentage", "bake_left_seconds", "gates", "failed_gate", "transitions",
    }
    assert status["checklist"][0]["step"] == "enabled at 5 %"
    assert status["checklist"][0]["at"].endswith("Z")
    assert client.get("/v1/rollouts", headers=READONLY).json()[0]["flag"] == FLAG


def test_api_start_twice_conflicts(client: TestClient) -> None:
    client.post(f"/v1/rollouts/{FLAG}/start", headers=ADMIN)

    response = client.post(f"/v1/rollouts/{FLAG}/start", headers=ADMIN)

    assert response.status_code == 409
    assert "already has a running rollout" in response.json()["message"]


def test_api_start_rejects_invalid_plan(client: TestClient) -> None:
    plan = {"stages": [{"percentage": 10}, {"percentage": 5}]}

    response = client.post(f"/v1/rollouts/{FLAG}/start", json={"plan": plan}, headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["field"] == "stages[2].percentage"
    assert client.get("/v1/status", headers=READONLY).json()["rollout"]["state"] == "none"


def test_api_readonly_token_cannot_start(client: TestClient) -> None:
    response = client.post(f"/v1/rollouts/{FLAG}/start", headers=READONLY)

    assert response.status_code == 403
    assert client.get(f"/v1/rollouts/{FLAG}", headers=READONLY).json()["state"] == "none"


def test_api_commands(client: TestClient) -> None:
    client.post(f"/v1/rollouts/{FLAG}/start", json={"plan": PLAN}, headers=ADMIN)

    early = client.post(f"/v1/rollouts/{FLAG}/advance", headers=ADMIN)
    paused = client.post(f"/v1/rollouts/{FLAG}/pause", json={"reason": "lunch"}, headers=ADMIN)
    resumed = client.post(f"/v1/rollouts/{FLAG}/resume", headers=ADMIN)
    forced = client.post(f"/v1/rollouts/{FLAG}/advance", json={"force": True}, headers=ADMIN)

    assert early.status_code == 409
    assert "bake left" in early.json()["message"]
    assert paused.json()["state"] == "paused"
    assert resumed.json()["state"] == "running"
    assert forced.json()["state"] == "completed"
    assert [t["event"] for t in forced.json()["transitions"]] == [
        "started", "paused", "resumed", "promoted", "completed",
    ]
    assert client.post(f"/v1/rollouts/{FLAG}/abort", headers=ADMIN).status_code == 404


def test_api_abort_allows_again(client: TestClient) -> None:
    client.put(
        "/v1/limits",
        json={"scope": "tier", "tier": "B", "action": "media_upload", "limit": 1, "window_seconds": 3600},
        headers=ADMIN,
    )
    client.post(f"/v1/rollouts/{FLAG}/start", json={"plan": {"stages": [{"percentage": 100, "bake": "1h"}]}}, headers=ADMIN)
    service = {"Authorization": "Bearer service-token-for-rollout-tests"}
    body = {"actor_type": "user", "actor_id": "u-1", "action": "media_upload"}
    client.post("/v1/check", json=body, headers=service)
    assert client.post("/v1/check", json=body, headers=service).json()["allowed"] is False

    response = client.post(f"/v1/rollouts/{FLAG}/abort", headers=ADMIN)

    assert response.json()["state"] == "aborted"
    assert client.post("/v1/check", json=body, headers=service).json()["allowed"] is True


def test_api_reports(client: TestClient) -> None:
    timeseries = client.get("/v1/reports/timeseries?since=30m", headers=READONLY)
    top = client.get("/v1/reports/top-blocked?since=2h&limit=3", headers=READONLY)
    bad = client.get("/v1/reports/by-hour?since=soon", headers=READONLY)

    assert timeseries.status_code == 200
    assert timeseries.json() == {"minutes": [], "block_rate_max": 0.05}
    assert top.status_code == 200
    assert top.json() == []
    assert bad.status_code == 422
    assert bad.json()["field"] == "since"
