"""A controller process killed with SIGKILL in the middle of a bake, and its replacement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from rollout_traffic import (
    Traffic,
    latest,
    open_migrated_catalog,
    scaled_default_plan,
    set_generous_limits,
    transition_rows,
    wait_for,
    wait_for_state,
)

from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.plans import Stage
from rampgate.rollout.operations import RolloutOperations

pytestmark = pytest.mark.integration

FIRST_BAKE_SECONDS = 5.0


def _start_controller(database_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    executable = str(Path(sys.executable).with_name("rampgate"))
    command = [
        executable,
        "--log-level",
        "INFO",
        "rollout",
        "run",
        ENFORCEMENT_FLAG,
        "--lease-seconds",
        "2",
        "--tick-seconds",
        "0.2",
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            env={**os.environ, "RAMPGATE_DATABASE_URL": database_url},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def _log_events(log_path: Path, event: str) -> list[dict[str, object]]:
    events = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            if document.get("event") == event:
                events.append(document)
    return events


def test_controller_restart_resumes_bake(postgres_url: str, tmp_path: Path) -> None:
    catalog = open_migrated_catalog(postgres_url)
    set_generous_limits(catalog)
    stages = (Stage(1, FIRST_BAKE_SECONDS), Stage(10, 1.0), Stage(25, 1.0), Stage(50, 1.0), Stage(100, 0.0))
    plan = scaled_default_plan(stages=stages)
    RolloutOperations(catalog).start(ENFORCEMENT_FLAG, plan, changed_by="test", via="cli")
    first_log = tmp_path / "first.log"
    second_log = tmp_path / "second.log"

    with Traffic(postgres_url):
        first = _start_controller(postgres_url, first_log)
        try:
            wait_for(
                lambda: latest(catalog).rollout.baked_seconds >= 2.0, timeout=30, message="two seconds of bake"
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()

        killed = latest(catalog)
        time.sleep(1.0)
        after_gap = latest(catalog)

        second = _start_controller(postgres_url, second_log)
        try:
            record = wait_for_state(catalog, {"completed", "rolled_back", "aborted"}, timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=15)

    assert killed.rollout.state == "running"
    assert killed.rollout.stage == 1
    assert after_gap.version == killed.version
    assert record.rollout.state == "completed", second_log.read_text()[-2000:]
    assert second.returncode == 0

    attached = _log_events(second_log, "rollout.attached")
    assert len(attached) == 1
    assert attached[0]["stage"] == 1
    bake_left = float(attached[0]["bake_left_seconds"])  # type: ignore[arg-type]
    assert bake_left == pytest.approx(FIRST_BAKE_SECONDS - killed.rollout.baked_seconds, abs=0.1)

    transitions = record.rollout.transitions
    assert [(t.event, t.percentage) for t in transitions] == [
        ("started", 1),
        ("promoted", 10),
        ("promoted", 25),
        ("promoted", 50),
        ("promoted", 100),
        ("completed", 100),
    ]
    attached_at = datetime.fromisoformat(str(attached[0]["timestamp"]).replace("Z", "+00:00")).timestamp()
    assert transitions[1].at - attached_at >= bake_left - 0.1

    rows = transition_rows(catalog)
    assert [row.seq for row in rows] == list(range(1, len(rows) + 1))
    assert max(Counter((row.event, row.stage) for row in rows).values()) == 1
    catalog.engine.dispose()
