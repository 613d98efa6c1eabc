"""The SQLite catalog watcher: changes to the cached tables reach the snapshot, audit rows do not reload it."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from rampgate.catalog.audit import AuditWriter
from rampgate.core.flags import ENFORCEMENT_FLAG
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.gate import Gate

# Long enough for several polls of 0.1 s on a loaded machine.
WAIT_SECONDS = 10.0


class Reloads:
    """Counts the watcher's reloads."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Event()

    def __call__(self, old: CatalogSnapshot, new: CatalogSnapshot) -> None:
        self.count += 1
        self.changed.set()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Gate, Path, Reloads]]:
    database = tmp_path / "catalog.db"
    gate = Gate(database_url=f"sqlite:///{database}", counter_store="memory", audit=False)
    reloads = Reloads()
    gate.watcher.add_listener(reloads)
    yield gate, database, reloads
    gate.close()


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_sql_flag_change_reaches_snapshot(served: tuple[Gate, Path, Reloads]) -> None:
    gate, database, _ = served

    with sqlite3.connect(database) as operator:
        operator.execute(
            "update feature_flags set enabled = 1, rollout_percentage = 25 where flag_name = ?", (ENFORCEMENT_FLAG,)
        )

    assert wait_until(lambda: gate.snapshot.flags[ENFORCEMENT_FLAG].percentage == 25)


def test_sql_trust_insert_reaches_snapshot(served: tuple[Gate, Path, Reloads]) -> None:
    gate, database, reloads = served

    with sqlite3.connect(database) as operator:
        operator.execute(
            "insert into trust_profiles (actor_type, actor_id, risk_tier, enforcement_level, signals, updated_at) "
            "values ('user', 'u-watched', 'D', 'E0', '{}', '2026-12-04 10:00:00')"
        )

    assert wait_until(lambda: ("user", "u-watched") in gate.snapshot.trust)
    assert reloads.count >= 1


def test_audit_rows_cause_no_reload(served: tuple[Gate, Path, Reloads]) -> None:
    gate, _, reloads = served
    gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="test")
    assert wait_until(lambda: reloads.count >= 1)
    time.sleep(0.3)
    reloads.count = 0
    writer = AuditWriter(gate.engine, max_buffer=10_000, spill_path=None)
    decision = gate.decide("user", "u-audited", "api_call")
    assert decision.mode == "enforce"

    # Several commits of another connection, each seen by a later poll.
    for _ in range(8):
        writer.record(decision, 1, time.time(), None, None)
        writer.flush()
        time.sleep(0.15)
    writer.close()

    assert writer.written == 8
    assert reloads.count == 0
