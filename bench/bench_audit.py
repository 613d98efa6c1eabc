"""Comparison 6: audit rows per second into PostgreSQL through rampgate's audit writer.

Each round queues rows on a :class:`rampgate.catalog.audit.AuditWriter`
(outside the timing) and times ``AuditWriter.flush()``, the call the
writer's thread makes every ``flush_interval``. It builds the column values
of every queued decision and writes them with COPY, in batches split over
its COPY connections. The rows come from real ``Gate.decide`` calls (memory
store, flag at 100 %, a mix of allowed and limited decisions of 10,000
actors), so they carry the fields and context a service writes.

For scale, the same rows, already converted to the writer's binary COPY
values, are written by one bare psycopg ``COPY … FROM STDIN (FORMAT
BINARY)`` on one connection: psycopg and the database alone. The database is private to the comparison and dropped
afterwards.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

from bench.machine import POSTGRES_ADMIN_URL
from bench.runner import Skip, Stats, add_table, add_target, measure, new_result, rate, ratio, size_of_run, spread

NAME = "audit"
TITLE = "Audit ingestion into PostgreSQL"
TARGET_ROWS_PER_SECOND = 50_000
ACTORS = 10_000
# (rounds, rows per round) by size of run.
SIZES = {"tiny": (1, 2_000), "quick": (3, 30_000), "full": (7, 200_000)}


def _database_url(name: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _create_database() -> str:
    import psycopg

    name = f"rampgate_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=2) as admin:
            admin.execute(f'create database "{name}"')
    except psycopg.Error as error:
        raise Skip(
            f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({error}); start it or set RAMPGATE_BENCH_POSTGRES_URL"
        ) from error
    return name


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


class Rows:
    """Decisions made by a memory gate, replayed into the writer's queue for every round."""

    def __init__(self, rows_per_round: int) -> None:
        from rampgate.core.flags import ENFORCEMENT_FLAG
        from rampgate.gate import memory_gate

        recorded: list[tuple[Any, ...]] = []

        class Keep:
            def record(self, decision: Any, units: int, now: float, request_id: Any, context: Any) -> None:
                recorded.append((decision, units, now, request_id, context))

            def flush(self) -> None:
                return None

            def close(self) -> None:
                return None

        gate = memory_gate(watch=False, recorder=Keep())
        gate.catalog.set_flag(ENFORCEMENT_FLAG, enabled=True, percentage=100, changed_by="bench")
        gate.refresh()
        for number in range(rows_per_round):
            # media_upload allows 5 per minute, so about half of these are limited.
            action = "media_upload" if number % 2 else "api_call"
            gate.decide("user", f"u-{number % ACTORS}", action, request_id=f"r-{number}")
        gate.close()
        self.recorded = recorded

    def queue(self, writer: Any) -> None:
        record = writer.record
        for decision, units, now, request_id, context in self.recorded:
            record(decision, units, now, request_id, context)


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """Time the audit writer's flush and a bare COPY of the same rows; return the result dict."""
    from rampgate.catalog.audit import COPY_AUDITS, COPY_TYPES, AuditWriter
    from rampgate.catalog.database import create_catalog_engine, migrate

    result = new_result(NAME, TITLE)
    rounds, rows_per_round = SIZES[size_of_run(quick, tiny)]
    database = _create_database()
    url = _database_url(database)
    engine = create_catalog_engine(url)
    try:
        import psycopg

        migrate(engine)
        rows = Rows(rows_per_round)
        with tempfile.TemporaryDirectory(prefix="rampgate-bench-audit-") as spill_directory:
            writer = AuditWriter(engine, spill_path=Path(spill_directory), max_buffer=rows_per_round * 2)
            copy_rows = [_column_values(*row) for row in rows.recorded]

            def writer_batch() -> tuple[int, float]:
                rows.queue(writer)
                before = writer.written
                start = perf_counter()
                writer.flush()
                elapsed = perf_counter() - start
                return writer.written - before, elapsed

            connection = psycopg.connect(url, autocommit=True)

            def copy_batch() -> tuple[int, float]:
                start = perf_counter()
                with connection.cursor() as cursor, cursor.copy(COPY_AUDITS) as copy:
                    copy.set_types(COPY_TYPES)
                    write_row = copy.write_row
                    for row in copy_rows:
                        write_row(row)
                return len(copy_rows), perf_counter() - start

            stats = measure(
                {"rampgate AuditWriter.flush (COPY)": writer_batch, "bare psycopg COPY of the same rows": copy_batch},
                rounds=rounds,
                warmup=1,
            )
            written = writer.written
            writer.close()
            stored = connection.execute("select count(*) from rate_limit_audits").fetchone()[0]
            connection.close()
    finally:
        engine.dispose()
        _drop_database(database)

    _report(result, stats, rows_per_round, written, stored, rounds)
    return result


def _column_values(decision: Any, units: int, now: float, request_id: str | None, context: Any) -> tuple[Any, ...]:
    """Build the binary COPY values of one decision, as the audit writer writes them."""
    from rampgate.catalog.audit import JSONB_VERSION, audit_context

    context_json = json.dumps(audit_context(decision, units, context), separators=(",", ":"))
    return (
        decision.actor_type, decision.actor_id, decision.action, decision.allowed, decision.remaining,
        units if decision.allowed else 0, request_id, JSONB_VERSION + context_json.encode(),
        datetime.fromtimestamp(now, timezone.utc),
    )


def _report(
    result: dict[str, Any], stats: dict[str, Stats], rows_per_round: int, written: int, stored: int, rounds: int
) -> None:
    writer = "rampgate AuditWriter.flush (COPY)"
    bare = "bare psycopg COPY of the same rows"
    rows = [
        [name, rate(figures.median).replace("/s", " rows/s"), spread(figures.spread),
         ratio(figures.median / stats[bare].median)]
        for name, figures in stats.items()
    ]
    add_table(result, f"{rows_per_round:,} rows per round", ["writer", "rows/s (median)", "spread", "vs bare COPY"], rows)
    value = stats[writer].median
    add_target(result, f"≥ {TARGET_ROWS_PER_SECOND:,} audit rows/s through the audit writer",
               rate(value).replace("/s", " rows/s"), value >= TARGET_ROWS_PER_SECOND)
    result["notes"].append(
        f"{rounds} rounds after one warm-up round, timed in wall time. The writer wrote {written:,} rows; the table "
        f"held {stored:,} at the end (the bare COPY rows included). Queueing the rows, the request path's part, "
        "is outside the timing; comparison 1 measures it."
    )
    result["data"] = {name: figures.as_dict() for name, figures in stats.items()}
    result["data"]["written"] = written
    result["data"]["stored"] = stored
