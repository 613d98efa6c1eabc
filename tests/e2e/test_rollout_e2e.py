"""A whole rollout through a real ``rampgate serve --controller`` with Redis counters on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.catalog.repository import Catalog
from rampgate.core.policies import Policy

try:
    from tests.e2e.server import Server, start_server
except ModuleNotFoundError:  # pytest run as a script puts tests/, not the repository, on sys.path
    from e2e.server import Server, start_server  # type: ignore[no-redef]

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("RAMPGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ACTIONS = ("create_post", "send_message", "follow", "media_upload", "search", "api_call")
ACTORS = 2000
FLAG = "rate_limit_enforcement"

PLAN = """
on_failure = "rollback"
approval = "auto"
min_decisions = 20
check_interval = "0.3s"

[[stages]]
percentage = 1
bake = "{bake}"
[[stages]]
percentage = 10
bake = "{bake}"
[[stages]]
percentage = 25
bake = "{bake}"
[[stages]]
percentage = 50
bake = "{bake}"
[[stages]]
percentage = 100

[[gates]]
metric = "false_positive_rate"
max = 0.01
[[gates]]
metric = "block_rate"
max = 0.05
[[gates]]
metric = "complaints"
max = 0
[[gates]]
metric = "errors"
max = 0
"""


@pytest.fixture
def env(postgres_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "RAMPGATE_DATABASE_URL": postgres_url,
        "RAMPGATE_COUNTER_STORE": "redis",
        "RAMPGATE_REDIS_URL": REDIS_URL,
        "RAMPGATE_REDIS_PREFIX": redis_prefix,
        # A loaded test machine can take longer than the 50 ms default, and a
        # fail-open decision counts against the errors gate.
        "RAMPGATE_STORE_TIMEOUT_MS": "2000",
    }


@pytest.fixture
def catalog(env: dict[str, str]) -> Iterator[Catalog]:
    engine = create_catalog_engine(env["RAMPGATE_DATABASE_URL"])
    migrate(engine)
    catalog = Catalog(engine)
    for action in ACTIONS:
        for tier in "ABCD":
            catalog.set_policy(
                Policy(scope="tier", tier=tier, action=action, limit_value=10_000, window_seconds=60), changed_by="test"
            )
    yield catalog
    engine.dispose()


@pytest.fixture
def server(env: dict[str, str], catalog: Catalog) -> Iterator[Server]:
    with start_server(env, args=("--controller",)) as server:
        yield server


def _rampgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    executable = str(Path(sys.executable).with_name("rampgate"))
    return subprocess.run(
        [executable, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def _status(env: dict[str, str]) -> dict[str, Any]:
    result = _rampgate(env, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class HttpTraffic:
    """Four threads asking ``/v1/check`` for their share of 2,000 actors, sweep after sweep."""

    def __init__(self, url: str, actions: tuple[str, ...] = ACTIONS, threads: int = 4) -> None:
        self.url = url
        self.actions = actions
        self.blocked = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(range(n, ACTORS, threads),), daemon=True) for n in range(threads)
        ]

    def __enter__(self) -> "HttpTraffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, actors: range) -> None:
        sweep = 0
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                for number in actors:
                    if self._stop.is_set():
                        return
                    action = self.actions[(number + sweep) % len(self.actions)]
                    response = client.post(
                        "/v1/check", json={"actor_type": "user", "actor_id": f"u-{number:04d}", "action": action}
                    )
                    if response.status_code != 200:
                        self.errors += 1
                    elif not response.json()["allowed"]:
                        self.blocked += 1
                sweep += 1


def _wait_for(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def _write_plan(tmp_path: Path, bake: str) -> str:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(bake=bake))
    return str(path)


def test_rollout_e2e_completes(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    started = _rampgate(env, "rollout", "start", FLAG, "--plan", _write_plan(tmp_path, "2s"))
    assert started.returncode == 0, started.stderr

    with HttpTraffic(server.url) as traffic:
        status = _wait_for(
            lambda: (document := _status(env))["rollout"]["state"] != "running" and document,
            timeout=90,
            message="the rollout to end",
        )

    assert status["rollout"]["state"] == "completed", status["rollout"]["failed_gate"]
    assert status["flag"]["enabled"] is True
    assert status["flag"]["percentage"] == 100
    assert traffic.errors == 0
    assert traffic.blocked == 0
    assert [step["step"] for step in status["checklist"]] == [
        "enabled at 1 %",
        "ramped to 10 %",
        "ramped to 25 %",
        "ramped to 50 %",
        "ramped to 100 %",
    ]
    assert all(step["at"] and step["at"].endswith("Z") for step in status["checklist"])
    assert "rollout.promoted" in server.logs()
    metrics = httpx.get(server.url + "/metrics").text
    assert 'rampgate_rollout_transitions_total{event="promoted",flag="rate_limit_enforcement"} 4.0' in metrics

    board = _rampgate(env, "status")
    assert board.returncode == 0
    assert "ramped to 100 %" in board.stdout
    assert "completed" in board.stdout


def test_rollout_e2e_rolls_back_on_block_rate(
    server: Server, env: dict[str, str], catalog: Catalog, tmp_path: Path
) -> None:
    catalog.set_policy(
        Policy(scope="tier", tier="B", action="api_call", limit_value=1, window_seconds=60), changed_by="test"
    )
    started = _rampgate(env, "rollout", "start", FLAG, "--plan", _write_plan(tmp_path, "60s"))
    assert started.returncode == 0, started.stderr

    with HttpTraffic(server.url, actions=("api_call",)) as traffic:
        status = _wait_for(
            lambda: (document := _status(env))["rollout"]["state"] != "running" and document,
            timeout=60,
            message="the rollout to end",
        )
        blocked_during_stage = traffic.blocked
        time.sleep(1.0)
        blocked_at_rollback = traffic.blocked
        time.sleep(2.0)
        blocked_after = traffic.blocked

    assert status["rollout"]["state"] == "rolled_back"
    assert status["rollout"]["stage"] == 1
    assert status["rollout"]["failed_gate"]["metric"] == "block_rate"
    assert status["flag"] == {"name": FLAG, "enabled": False, "percentage": 0, "action_percentages": {}}
    assert blocked_during_stage > 0
    # A second after the rollback every server allows again.
    assert blocked_after == blocked_at_rollback


def test_rollout_e2e_abort_through_api(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    started = _rampgate(env, "rollout", "start", FLAG, "--plan", _write_plan(tmp_path, "60s"))
    assert started.returncode == 0, started.stderr

    response = httpx.post(server.url + f"/v1/rollouts/{FLAG}/abort", json={"reason": "pager went off"})

    assert response.status_code == 200
    assert response.json()["state"] == "aborted"
    assert response.json()["transitions"][-1]["reason"] == "pager went off"
    status = _status(env)
    assert status["flag"]["enabled"] is False
    assert status["rollout"]["state"] == "aborted"
