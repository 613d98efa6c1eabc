"""The audit writer on real databases: batches, decision counts, bounds, spill files, pruning."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from servers import PostgresServer, wait_until
from sqlalchemy.engine import Engine

from rampgate.catalog import schema
from rampgate.catalog.audit import AuditWriter, prune_audits
from rampgate.catalog.database import create_catalog_engine, migrate
from rampgate.core.decision import Decision

pytestmark = pytest.mark.integration

NOW = 1_790_000_000.0
RAMPGATE = str(Path(sys.executable).with_name("rampgate"))


def decision(actor_id: str = "u-1", mode: str = "enforce", allowed: bool = True, in_cohort: bool = True) -> Decision:
    return Decision(
        allowed, mode, not allowed, "ok" if allowed else "limited", "media_upload", "B", "tier:B:media_upload",
        5, 60, 3 if allowed else 0, 12.0, 0.0 if allowed else 11.5, "user", actor_id, in_cohort,
    )


def count_audits(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(schema.rate_limit_audits)).scalar_one())


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_catalog_engine(postgres_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def test_audit_rows_visible_within_second(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    writer.start()
    try:
        started = time.monotonic()
        for number in range(1000):
            writer.record(decision(f"u-{number}"), 1, time.time(), f"req-{number}", None)
        wait_until(lambda: count_audits(postgres_engine) == 1000, 1.0, interval=0.01, what="1000 audit rows visible")
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    print(f"1000 audit rows visible after {elapsed:.3f} s")
    assert writer.written == 1000


def test_audit_row_columns(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    writer.record(decision("u-7", allowed=False), 1, NOW, "req-7", {"path": "/upload"})

    writer.flush()

    with postgres_engine.connect() as connection:
        row = connection.execute(sa.select(schema.rate_limit_audits)).one()
    assert (row.actor_type, row.actor_id, row.action, row.allowed) == ("user", "u-7", "media_upload", False)
    assert (row.tokens_available, row.tokens_consumed, row.request_id) == (0, 0, "req-7")
    assert row.context == {
        "path": "/upload", "tier": "B", "policy": "tier:B:media_upload", "reason": "limited", "cost": 1,
        "retry_after": 11.5,
    }
    assert row.created_at.timestamp() == NOW


def test_audit_nul_characters_replaced(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    writer.record(decision("u\x00nul"), 1, NOW, "req\x00nul", {"note": "a\x00b"})
    writer.record(decision("u-plain"), 1, NOW, "req-plain", None)

    writer.flush()

    with postgres_engine.connect() as connection:
        rows = connection.execute(sa.select(schema.rate_limit_audits).order_by(schema.rate_limit_audits.c.actor_id)).all()
    assert [row.actor_id for row in rows] == ["u-plain", "u\ufffdnul"]
    assert rows[1].request_id == "req\ufffdnul"
    assert rows[1].context["note"] == "a\ufffdb"
    assert writer.write_errors == 0


def test_audit_unenforced_decisions_counted_per_minute(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    for _ in range(3):
        writer.record(decision(mode="shadow", allowed=True, in_cohort=False), 1, NOW, None, None)
    writer.flush()
    writer.record(decision(mode="shadow", allowed=True, in_cohort=False), 1, NOW + 1, None, None)
    writer.record(decision(mode="fail_open", allowed=True), 1, NOW + 61, None, None)

    writer.flush()

    with postgres_engine.connect() as connection:
        rows = connection.execute(
            sa.select(schema.rate_limit_decision_stats).order_by(schema.rate_limit_decision_stats.c.minute)
        ).all()
    assert count_audits(postgres_engine) == 0
    assert [(row.mode, row.in_cohort, row.decisions) for row in rows] == [("shadow", False, 4), ("fail_open", True, 1)]
    assert rows[0].minute.timestamp() == NOW // 60 * 60


@pytest.mark.parametrize("fraction", [0.0, 0.123456])
def test_audit_sqlite_row_columns(sqlite_engine: Engine, tmp_path: Path, fraction: float) -> None:
    writer = AuditWriter(sqlite_engine, spill_path=tmp_path)
    writer.record(decision("u-7", allowed=False), 1, NOW + fraction, "req-7", {"path": "/upload"})

    writer.flush()

    audits = schema.rate_limit_audits
    with sqlite_engine.connect() as connection:
        row = connection.execute(sa.select(audits)).one()
        stored_text = connection.exec_driver_sql("select created_at from rate_limit_audits").scalar_one()
        # Filters bind a datetime as SQLAlchemy formats it, so the stored text must sort the same way.
        later = connection.execute(
            sa.select(sa.func.count()).select_from(audits).where(audits.c.created_at > _utc(NOW + fraction))
        ).scalar_one()
        same_or_later = connection.execute(
            sa.select(sa.func.count()).select_from(audits).where(audits.c.created_at >= _utc(NOW + fraction))
        ).scalar_one()
    assert (row.actor_type, row.actor_id, row.action, row.allowed) == ("user", "u-7", "media_upload", False)
    assert row.context == {
        "path": "/upload", "tier": "B", "policy": "tier:B:media_upload", "reason": "limited", "cost": 1,
        "retry_after": 11.5,
    }
    assert row.created_at.replace(tzinfo=None) == _utc(NOW + fraction).replace(tzinfo=None)
    assert len(stored_text) == len("2026-09-21 14:13:20.000000")
    assert (later, same_or_later) == (0, 1)


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def test_audit_sqlite_multirow_insert(sqlite_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(sqlite_engine, batch_size=100, spill_path=tmp_path)
    for number in range(250):
        writer.record(decision(f"u-{number}"), 1, NOW, None, None)
    writer.record(decision(mode="bypass", in_cohort=False), 1, NOW, None, None)

    writer.close()

    assert count_audits(sqlite_engine) == 250
    assert writer.counters() == {
        "queue_depth": 0, "written": 250, "spilled": 0, "replayed": 0, "dropped": 0, "write_errors": 0,
    }


def test_audit_buffer_bound_counts_drops(sqlite_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(sqlite_engine, max_buffer=10, spill_path=tmp_path)

    for number in range(15):
        writer.record(decision(f"u-{number}"), 1, NOW, None, None)

    assert writer.dropped == 5
    assert writer.queue_depth == 10
    writer.close()
    assert count_audits(sqlite_engine) == 10


def test_audit_outage_spills_and_replays(private_postgres: PostgresServer, tmp_path: Path) -> None:
    url = private_postgres.create_database("audits")
    engine = create_catalog_engine(url)
    migrate(engine)
    writer = AuditWriter(engine, max_buffer=100, flush_interval=0.05, spill_path=tmp_path)
    writer.start()
    try:
        private_postgres.stop()
        for number in range(500):
            writer.record(decision(f"u-{number}"), 1, NOW, None, None)
            writer.record(decision(mode="shadow", in_cohort=False), 1, NOW, None, None)
            if number % 50 == 0:
                time.sleep(0.1)
        wait_until(lambda: writer.spilled >= 400, 10, what="rows spilled while PostgreSQL is down")
        spill_files = list(writer.spill_directory.glob("audit-*.jsonl"))

        private_postgres.start()
        wait_until(lambda: count_audits(engine) == 500, 20, interval=0.1, what="every audit row written after recovery")
    finally:
        writer.close()

    with engine.connect() as connection:
        shadow = connection.execute(sa.select(sa.func.sum(schema.rate_limit_decision_stats.c.decisions))).scalar_one()
    engine.dispose()
    assert spill_files
    assert writer.dropped == 0
    assert writer.replayed == writer.spilled
    assert shadow == 500
    assert list(writer.spill_directory.glob("audit-*")) == []


def test_audit_close_spills_and_next_writer_replays(private_postgres: PostgresServer, tmp_path: Path) -> None:
    url = private_postgres.create_database("audits")
    engine = create_catalog_engine(url)
    migrate(engine)
    writer = AuditWriter(engine, spill_path=tmp_path)
    private_postgres.stop()
    for number in range(120):
        writer.record(decision(f"u-{number}"), 1, NOW, None, None)

    writer.close()
    private_postgres.start()
    successor = AuditWriter(engine, spill_path=tmp_path)
    successor.close()

    assert writer.spilled == 120
    assert successor.replayed == 120
    assert count_audits(engine) == 120
    engine.dispose()


def test_audit_spill_file_lines(sqlite_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(sqlite_engine, spill_path=tmp_path)
    writer.record(decision("u-9"), 2, NOW, "req-9", None)
    writer._collect()

    writer._spill_collected()

    (path,) = writer.spill_directory.glob("audit-*.jsonl")
    line = json.loads(path.read_text().splitlines()[0])
    assert line[:8] == ["a", "user", "u-9", "media_upload", True, 3, 2, "req-9"]
    assert line[9] == NOW
    writer.close()
    assert count_audits(sqlite_engine) == 1


def test_prune_audits_deletes_old_rows_in_batches(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    old = time.time() - 40 * 86400
    for number in range(20):
        writer.record(decision(f"old-{number}"), 1, old, None, None)
    for number in range(5):
        writer.record(decision(f"new-{number}"), 1, time.time(), None, None)
    writer.record(decision(mode="shadow", in_cohort=False), 1, old, None, None)
    writer.record(decision(mode="shadow", in_cohort=False), 1, time.time(), None, None)
    writer.close()

    deleted = prune_audits(postgres_engine, 30 * 86400, batch_size=7)

    assert deleted == {"audits": 20, "decision_stats": 1}
    assert count_audits(postgres_engine) == 5


def test_audits_prune_command_prints_json(postgres_engine: Engine, postgres_url: str, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    for number in range(3):
        writer.record(decision(f"old-{number}"), 1, time.time() - 31 * 86400, None, None)
    writer.close()

    result = subprocess.run(
        [RAMPGATE, "audits", "prune", "--older-than", "30d", "--json", "--batch-size", "2"],
        env={"RAMPGATE_DATABASE_URL": postgres_url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"older_than_seconds": 2592000.0, "deleted": {"audits": 3, "decision_stats": 0}}


def test_audits_prune_command_rejects_bad_duration(postgres_url: str) -> None:
    result = subprocess.run(
        [RAMPGATE, "audits", "prune", "--older-than", "soon"],
        env={"RAMPGATE_DATABASE_URL": postgres_url, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 2
    assert "--older-than" in result.stderr


def test_audit_copy_connection_reconnects(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path)
    writer.record(decision("u-a"), 1, NOW, None, None)
    writer.flush()
    assert writer._copy_connections[0] is not None
    with psycopg.connect(writer._copy_connections[0].info.dsn, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (writer._copy_connections[0].info.backend_pid,))

    writer.record(decision("u-b"), 1, NOW, None, None)
    with pytest.raises(psycopg.OperationalError):
        writer.flush()
    writer.flush()
    writer.close()

    assert count_audits(postgres_engine) == 2


def test_audit_parallel_copy_keeps_failed_part(postgres_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(postgres_engine, spill_path=tmp_path, copy_connections=2)
    for number in range(5000):
        writer.record(decision(f"first-{number}"), 1, NOW, None, None)
    writer.flush()
    second = writer._copy_connections[1]
    assert second is not None
    with psycopg.connect(second.info.dsn, autocommit=True) as admin:
        admin.execute("select pg_terminate_backend(%s)", (second.info.backend_pid,))

    for number in range(5000):
        writer.record(decision(f"second-{number}"), 1, NOW, None, None)
    with pytest.raises(psycopg.OperationalError):
        writer.flush()
    written_before_retry = count_audits(postgres_engine)
    writer.flush()
    writer.close()

    assert written_before_retry == 7500
    assert count_audits(postgres_engine) == 10_000
    assert writer.written == 10_000


def test_prune_audits_on_sqlite(sqlite_engine: Engine, tmp_path: Path) -> None:
    writer = AuditWriter(sqlite_engine, spill_path=tmp_path)
    old = time.time() - 2 * 86400
    for number in range(9):
        writer.record(decision(f"old-{number}"), 1, old, None, None)
    writer.record(decision("new"), 1, time.time(), None, None)
    writer.record(decision(mode="bypass", in_cohort=False), 1, old, None, None)
    writer.close()

    deleted = prune_audits(sqlite_engine, 86400, batch_size=4)

    assert deleted == {"audits": 9, "decision_stats": 1}
    assert count_audits(sqlite_engine) == 1
