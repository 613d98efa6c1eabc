"""``rampgate serve --workers 2`` on the Redis counter store: shared limits and merged metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from e2e.server import start_server

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SERVICE_TOKEN = "service-token-for-workers-e2e"
ADMIN_TOKEN = "admin-token-for-workers-e2e"
REDIS_URL = "redis://127.0.0.1:6379/0"
DECISIONS = 40


def decision_total(metrics: str, outcome: str) -> float:
    pattern = rf'rampgate_decisions_total\{{action="media_upload",mode="enforce",outcome="{outcome}"\}} (\S+)'
    match = re.search(pattern, metrics)
    return float(match.group(1)) if match else 0.0


def test_workers_share_limits_and_metrics(tmp_path: Path, redis_prefix: str) -> None:
    env = {
        "RAMPGATE_DATABASE_URL": f"sqlite:///{tmp_path}/catalog.db",
        "RAMPGATE_COUNTER_STORE": "redis",
        "RAMPGATE_REDIS_URL": REDIS_URL,
        "RAMPGATE_REDIS_PREFIX": redis_prefix,
        # A loaded test machine can exceed the default 50 ms budget, and a
        # fail-open decision would not count against the shared limit.
        "RAMPGATE_STORE_TIMEOUT_MS": "2000",
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAMPGATE_CONFIG": str(tmp_path / "absent.toml"),
    }
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = {"actor_type": "user", "actor_id": "shared-user", "action": "media_upload"}

    with start_server(env, workers=2) as server:
        httpx.patch(server.url + "/v1/flags/rate_limit_enforcement", json={"enabled": True, "percentage": 100}, headers=admin)
        # A sliding window of an hour admits exactly 5 however slowly the requests arrive.
        policy = {"scope": "actor", "actor_type": "user", "actor_id": "shared-user", "action": "media_upload",
                  "algorithm": "sliding_window", "limit": 5, "window_seconds": 3600}
        httpx.put(server.url + "/v1/limits", json=policy, headers=admin)
        time.sleep(1.0)  # every worker reloads a catalog change within a second
        allowed = []
        for _ in range(DECISIONS):
            # A new connection per request lets the kernel spread requests over both workers.
            response = httpx.post(server.url + "/v1/check", json=body, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
            allowed.append(response.json()["allowed"])
        scrapes = [httpx.get(server.url + "/metrics", headers=admin).text for _ in range(6)]
        ready = httpx.get(server.url + "/readyz")

    assert allowed.count(True) == 5
    assert ready.json()["counter_store"] == "ok"
    for metrics in scrapes:
        assert decision_total(metrics, "allowed") == 5
        assert decision_total(metrics, "blocked") == DECISIONS - 5
    assert server.logs().count('"service.started"') == 2
    assert '"service.stopped"' in server.logs()
