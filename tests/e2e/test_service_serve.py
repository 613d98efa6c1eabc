"""``rampgate serve`` as a process: start-up checks, open endpoints, metrics, graceful shutdown."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from e2e.server import rampgate_executable, start_server
from rampgate.cli.serve_command import check_serve_options
from rampgate.errors import ConfigurationError, InvalidInput
from rampgate.service.jwt_auth import JwtVerifier
from rampgate.settings import Settings

pytestmark = pytest.mark.e2e

# A documentation address (TEST-NET-1) that no interface has: if a check wrongly
# let serve start, binding would fail instead of listening on a real network.
PUBLIC_HOST = "192.0.2.1"
SERVICE_TOKEN = "service-token-for-serve-e2e"
ADMIN_TOKEN = "admin-token-for-serve-e2e"
READONLY_TOKEN = "readonly-token-for-serve-e2e"


def server_env(directory: Path, **extra: str) -> dict[str, str]:
    env = {
        "RAMPGATE_DATABASE_URL": f"sqlite:///{directory}/catalog.db",
        "RAMPGATE_COUNTER_STORE": "memory",
        "RAMPGATE_SERVICE_TOKEN": SERVICE_TOKEN,
        "RAMPGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAMPGATE_ADMIN_READONLY_TOKEN": READONLY_TOKEN,
        "RAMPGATE_CONFIG": str(directory / "absent.toml"),
    }
    env.update(extra)
    return env


def run_serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run a serve command that is expected to exit at once."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("RAMPGATE_")}
    return subprocess.run(
        [rampgate_executable(), "serve", *args], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_serve_workers_refuse_memory_store(tmp_path: Path) -> None:
    result = run_serve(server_env(tmp_path), "--workers", "2", "--port", "1")

    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "redis" in result.stderr
    assert "postgres" in result.stderr


def test_serve_public_host_needs_service_token(tmp_path: Path) -> None:
    env = server_env(tmp_path)
    del env["RAMPGATE_SERVICE_TOKEN"]
    del env["RAMPGATE_ADMIN_TOKEN"]

    result = run_serve(env, "--host", PUBLIC_HOST, "--port", "8080")

    assert result.returncode == 2
    assert "RAMPGATE_SERVICE_TOKEN" in result.stderr
    assert "RAMPGATE_ADMIN_TOKEN" not in result.stderr


@pytest.mark.parametrize(
    ("settings", "host", "port", "workers", "field"),
    [
        (Settings(service_token="s"), "10.1.2.3", 8080, 1, "--host"),
        (Settings(admin_readonly_token="r"), "::", 8080, 1, "--host"),
        (Settings(), "127.0.0.1", 70000, 1, "--port"),
        (Settings(), "127.0.0.1", 8080, 0, "--workers"),
        (Settings(counter_store="redis"), "127.0.0.1", 8080, 65, "--workers"),
    ],
)
def test_serve_options_rejected(settings: Settings, host: str, port: int, workers: int, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_serve_options(settings, host, port, workers)

    assert raised.value.field == field


@pytest.mark.parametrize(
    ("settings", "host", "workers"),
    [
        (Settings(), "127.0.0.1", 1),
        (Settings(), "localhost", 1),
        (Settings(), "::1", 1),
        (Settings(service_token="s", admin_token="a"), "0.0.0.0", 1),
        (Settings(counter_store="redis", service_token="s", admin_readonly_token="r"), "10.1.2.3", 4),
    ],
)
def test_serve_options_accepted(settings: Settings, host: str, workers: int) -> None:
    check_serve_options(settings, host, 8080, workers)


def test_serve_bad_public_key_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        JwtVerifier(Settings(jwt_public_key=str(tmp_path / "missing.pem")))

    assert raised.value.field == "RAMPGATE_JWT_PUBLIC_KEY"


def test_serve_open_endpoints(tmp_path: Path) -> None:
    with start_server(server_env(tmp_path)) as server:
        health = httpx.get(server.url + "/healthz")
        ready = httpx.get(server.url + "/readyz")
        schema = httpx.get(server.url + "/openapi.json")
        metrics_without_token = httpx.get(server.url + "/metrics")

    assert health.json() == {"status": "ok"}
    assert ready.json() == {"status": "ready", "catalog": "ok", "counter_store": "ok"}
    assert "/v1/check" in schema.json()["paths"]
    assert "/v1/appeals" in schema.json()["paths"]
    assert metrics_without_token.status_code == 401


def test_serve_metrics_and_audit_flush(tmp_path: Path) -> None:
    """Enforced decisions are counted in /metrics and every audit row is written by the time serve exits."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    service = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    body = {"actor_type": "user", "actor_id": "audited", "action": "follow"}

    with start_server(server_env(tmp_path)) as server:
        httpx.patch(server.url + "/v1/flags/rate_limit_enforcement", json={"enabled": True, "percentage": 100}, headers=admin)
        # A sliding window of an hour admits exactly 15 however slowly the requests arrive.
        policy = {"scope": "tier", "tier": "B", "action": "follow", "algorithm": "sliding_window",
                  "limit": 15, "window_seconds": 3600}
        httpx.put(server.url + "/v1/limits", json=policy, headers=admin)
        decisions = [httpx.post(server.url + "/v1/check", json=body, headers=service).json() for _ in range(20)]
        metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {READONLY_TOKEN}"}).text
    exit_status = server.stop()

    with sqlite3.connect(tmp_path / "catalog.db") as connection:
        rows = connection.execute(
            "select count(*), sum(allowed) from rate_limit_audits where actor_id = 'audited'"
        ).fetchone()

    # uvicorn re-raises the SIGTERM it handled, so a graceful stop may end with -15.
    assert exit_status in (0, -15)
    assert '"service.stopped"' in server.logs()
    assert [decision["allowed"] for decision in decisions] == [True] * 15 + [False] * 5
    assert 'rampgate_decisions_total{action="follow",mode="enforce",outcome="allowed"} 15.0' in metrics
    assert 'rampgate_decisions_total{action="follow",mode="enforce",outcome="blocked"} 5.0' in metrics
    assert 'rampgate_flag_percentage{flag="rate_limit_enforcement"} 100.0' in metrics
    assert rows == (20, 15)


def test_serve_with_controller_flag(tmp_path: Path) -> None:
    with start_server(server_env(tmp_path), args=("--controller",)) as server:
        ready = httpx.get(server.url + "/readyz")

    assert ready.status_code == 200
    assert '"rollout.controller_started"' in server.logs()
    assert "Traceback" not in server.logs()


def sign_in_failures_until_throttled(url: str, forwarded_for: str) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for}
    return [
        httpx.post(f"{url}/console/session", data={"token": "wrong"}, headers=headers, timeout=5).status_code
        for _ in range(11)
    ]


@pytest.mark.parametrize(("trusted", "second_client_status"), [(True, 401), (False, 429)])
def test_serve_forwarded_for_separates_clients(tmp_path: Path, trusted: bool, second_client_status: int) -> None:
    args = ("--forwarded-allow-ips", "127.0.0.1") if trusted else ()

    with start_server(server_env(tmp_path), args=args) as server:
        first = sign_in_failures_until_throttled(server.url, "203.0.113.5")
        second = httpx.post(
            f"{server.url}/console/session", data={"token": "wrong"}, headers={"X-Forwarded-For": "203.0.113.6"},
            timeout=5,
        )

    assert first == [401] * 10 + [429]
    assert second.status_code == second_client_status


def test_serve_rejects_invalid_forwarded_allow_ips(tmp_path: Path) -> None:
    result = run_serve(server_env(tmp_path), "--forwarded-allow-ips", "proxy.internal")

    assert result.returncode == 2
    assert "--forwarded-allow-ips" in result.stderr
