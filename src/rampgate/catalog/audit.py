"""The audit trail: one row per enforced decision, per-minute counts for the rest.

The request path only appends a tuple to a bounded in-memory queue. A
background thread writes the queue in batches (``COPY`` on PostgreSQL, a
multi-row insert on SQLite), so a slow or failed database never delays a
decision, and rows are visible within a second in normal operation.

While the database is down, rows wait in memory; once half of ``max_buffer``
is waiting, the writer moves them to JSON-lines spill files and replays the
files when the database responds again. Rows are dropped, counted and logged
only when both the buffer and the spill directory (``max_spill_bytes``) are
full. ``close()`` writes everything, or spills it when the database is down,
so the next process on the same catalog replays it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from rampgate.catalog import schema
from rampgate.core.decision import Decision

logger = logging.getLogger(__name__)

# (actor_type, actor_id, action, allowed, remaining, units, request_id,
# context, created_at, tier, policy, reason, retry_after): the decision's
# fields, copied on the request path, and the writer thread builds the column
# values.
AuditRow = tuple[
    str, str, str, bool, "int | None", int, "str | None", "dict[str, Any] | None", float,
    str, "str | None", str, "float | None",
]
# (created_at, action, tier, mode, in_cohort, reason, would_block): one
# decision to count, created_at in Unix seconds; the writer thread rounds it
# down to the minute.
StatRow = tuple[float, str, str, str, bool, str, bool]
# The queues are flat: the request path adds a row's values one after the
# other with a single deque.extend, which no other thread can interleave, so
# a queue always contains whole rows. The cyclic garbage collector never
# tracks a string or a number. It tracks a queued tuple until its first
# collection, and with a tuple queued per decision those collections cost
# 7 % of a decision. A queued Decision object stays tracked, and cost 1.4 µs
# per decision at 100,000 queued rows (BENCHMARKS.md, comparison 1).
AUDIT_ROW_LENGTH = 13
STAT_ROW_LENGTH = 7
# The columns of one audit row as written and spilled, created_at in Unix seconds.
AUDIT_COLUMNS = (
    "actor_type", "actor_id", "action", "allowed", "tokens_available", "tokens_consumed",
    "request_id", "context", "created_at",
)
StatKey = tuple[int, str, str, str, bool, str]

INSERT_AUDITS_SQLITE = (
    f"insert into rate_limit_audits ({', '.join(AUDIT_COLUMNS)}) values ({', '.join('?' * len(AUDIT_COLUMNS))})"
)
COPY_AUDITS = f"copy rate_limit_audits ({', '.join(AUDIT_COLUMNS)}) from stdin (format binary)"
# Binary COPY: jsonb travels as a version byte (1) followed by the JSON text,
# which the bytea dumper sends unchanged.
COPY_TYPES = ("text", "text", "text", "bool", "int4", "int4", "text", "bytea", "timestamptz")
JSONB_VERSION = b"\x01"
SPILL_FILE_ROWS = 50_000
# A batch is split over several COPY connections only when each part gets this many rows.
MIN_PARALLEL_ROWS = 1_000
WRITE_ERRORS = (sa.exc.SQLAlchemyError, psycopg.Error, OSError)


class DecisionRecorder(Protocol):
    """The destination of every decision that :class:`rampgate.Gate` makes."""

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NullRecorder:
    """Records nothing: for callers that keep their own statistics."""

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None:
        return None

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def audit_context(decision: Decision, units: int, context: dict[str, Any] | None) -> dict[str, Any]:
    """Build the ``context`` column: the caller's context plus the decision's tier, policy and reason."""
    return _merge_context(context, decision.tier, decision.policy, decision.reason, units, decision.retry_after)


def _merge_context(
    context: dict[str, Any] | None, tier: str, policy: str | None, reason: str, units: int, retry_after: float | None
) -> dict[str, Any]:
    merged: dict[str, Any] = dict(context) if context else {}
    merged["tier"] = tier
    merged["policy"] = policy
    merged["reason"] = reason
    merged["cost"] = units
    if retry_after:
        merged["retry_after"] = retry_after
    return merged


def audit_values(row: AuditRow | list[Any]) -> tuple[Any, ...]:
    """Build the column values of one queued decision, an :data:`AuditRow`, in :data:`AUDIT_COLUMNS` order.

    ``context`` is JSON text and ``created_at`` Unix seconds, so the tuple can
    go to a spill file as it is. Without a caller context the JSON text is
    formatted directly, which costs a fraction of ``json.dumps`` on a dict;
    the result equals ``json.dumps(audit_context(...))`` without spaces.
    """
    (
        actor_type, actor_id, action, allowed, remaining, units, request_id, context, created_at,
        tier, policy, reason, retry_after,
    ) = row
    if context:
        merged = _merge_context(context, tier, policy, reason, units, retry_after)
        context_json = json.dumps(merged, separators=(",", ":"), default=str)
    else:
        # tier and reason are fixed vocabularies, so only the policy name needs escaping.
        context_json = (
            f'{{"tier":"{tier}","policy":{_json_string(policy)},'
            f'"reason":"{reason}","cost":{units}'
            + (f',"retry_after":{retry_after!r}}}' if retry_after else "}")
        )
    # PostgreSQL text and jsonb cannot hold NUL, and one such row would fail
    # its whole batch again and again, so NUL becomes U+FFFD here.
    if "\x00" in actor_id:
        actor_id = actor_id.replace("\x00", "\ufffd")
    if request_id is not None and "\x00" in request_id:
        request_id = request_id.replace("\x00", "\ufffd")
    if "\\u0000" in context_json:
        context_json = context_json.replace("\\u0000", "\\ufffd")
    return (
        actor_type,
        actor_id,
        action,
        allowed,
        remaining,
        units if allowed else 0,
        request_id,
        context_json,
        created_at,
    )


_json_string = json.JSONEncoder().encode


def default_spill_path() -> Path:
    """``$XDG_STATE_HOME/rampgate/audit-spill``, by default under ``~/.local/state``."""
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state_home) / "rampgate" / "audit-spill"


def _timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _sqlite_timestamp(seconds: float) -> str:
    """Format Unix seconds as SQLAlchemy stores a DateTime in SQLite: ``2026-12-04 10:00:00.000000``, UTC."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(" ", "microseconds")[:26]


class AuditWriter:
    """Batches audit rows and decision counts into the catalog database.

    ``max_buffer`` bounds the rows held in memory (audit rows plus decision
    counts). ``flush_interval`` is the longest a row waits before its batch is
    written, in seconds. ``spill_path`` is the spill directory (default
    :func:`default_spill_path`); files go to a subdirectory named after the
    catalog database, so they are replayed only into the database they came
    from. ``max_spill_bytes`` bounds that subdirectory. On PostgreSQL a large
    batch is split over ``copy_connections`` COPY connections that the
    server fills in parallel.

    Counters, readable at any time: ``queue_depth`` (rows waiting in memory),
    ``written`` (audit rows inserted, replays included), ``spilled`` (rows
    moved to spill files), ``replayed`` (spilled rows inserted later),
    ``dropped`` (rows lost because every bound was hit) and ``write_errors``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 0.2,
        max_buffer: int = 100_000,
        batch_size: int = 10_000,
        spill_path: str | Path | None = None,
        max_spill_bytes: int = 1 << 30,
        copy_connections: int = 2,
    ) -> None:
        if max_buffer < 2 or batch_size < 1 or copy_connections < 1:
            raise ValueError("need max_buffer >= 2, batch_size >= 1 and copy_connections >= 1")
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.max_spill_bytes = max_spill_bytes
        self.copy_connections = copy_connections
        self.spill_directory = Path(spill_path or default_spill_path()) / _database_digest(engine)

        # Filled by the request path, emptied by the writer: AuditRow and
        # StatRow values, AUDIT_ROW_LENGTH and STAT_ROW_LENGTH per row, and at
        # most max_buffer rows each.
        self._audits: deque[Any] = deque()
        self._stats: deque[Any] = deque()
        self._audit_values_limit = max_buffer * AUDIT_ROW_LENGTH
        self._stat_values_limit = max_buffer * STAT_ROW_LENGTH
        # Rows taken off the queues but not yet written, used only under ``_flush_lock``.
        self._unwritten: list[tuple[Any, ...]] = []
        self._stat_totals: dict[StatKey, list[int]] = {}

        self.dropped = 0
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self.write_errors = 0

        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._copy_connections: list[psycopg.Connection[Any] | None] = [None] * copy_connections
        self._copy_pool: ThreadPoolExecutor | None = None
        self._spill_sequence = 0
        self._release_stale_claims()

    @property
    def queue_depth(self) -> int:
        """Audit rows and decision counts held in memory, waiting to be written."""
        return (
            len(self._audits) // AUDIT_ROW_LENGTH + len(self._stats) // STAT_ROW_LENGTH
            + len(self._unwritten) + len(self._stat_totals)
        )

    def counters(self) -> dict[str, int]:
        """Return the writer's counters, for metrics and health checks."""
        return {
            "queue_depth": self.queue_depth,
            "written": self.written,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "write_errors": self.write_errors,
        }

    # -- request path ----------------------------------------------------------

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None:
        """Queue one decision: an audit row when enforced, a per-minute count otherwise."""
        if decision.mode == "enforce":
            if len(self._audits) >= self._audit_values_limit:
                self._drop()
                return
            self._audits.extend((
                decision.actor_type, decision.actor_id, decision.action, decision.allowed, decision.remaining,
                units, request_id, context, now, decision.tier, decision.policy, decision.reason,
                decision.retry_after,
            ))
            return

        if len(self._stats) >= self._stat_values_limit:
            self._drop()
            return
        self._stats.extend((
            now, decision.action, decision.tier, decision.mode, decision.in_cohort, decision.reason,
            decision.would_block,
        ))

    def _drop(self, rows: int = 1) -> None:
        self.dropped += rows
        now = time.monotonic()
        if now - self._last_drop_log > 10:
            self._last_drop_log = now
            logger.warning(
                "audit.dropped",
                extra={"dropped_total": self.dropped, "max_buffer": self.max_buffer,
                       "spill_directory": str(self.spill_directory),
                       "hint": "the catalog database is slow or down and the spill directory is full or "
                       "unwritable; raise RAMPGATE_AUDIT_BUFFER_ROWS or free disk space"},
            )

    # -- writer thread ---------------------------------------------------------

    def start(self) -> None:
        """Start the background writer thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rampgate-audit-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._cycle()

    def _cycle(self) -> None:
        """Run one pass of the writer: write, or spill while the database is down, then replay spill files."""
        with self._flush_lock:
            self._collect()
            if time.monotonic() < self._retry_at:
                self._spill_if_full()
                return
            try:
                self._write_collected()
                self._replay_spilled(max_files=1)
            except WRITE_ERRORS as error:
                self._record_failure(error)
                self._spill_if_full()
                return
            self._backoff = 0.0

    def _collect(self) -> None:
        """Move queued rows into the writer's own lists, at most ``max_buffer`` audit rows at a time."""
        unwritten = self._unwritten
        room = max(self.max_buffer - len(unwritten), 0)
        rows = min(room, len(self._audits) // AUDIT_ROW_LENGTH)
        values = _pop_values(self._audits, rows * AUDIT_ROW_LENGTH)
        for start in range(0, len(values), AUDIT_ROW_LENGTH):
            unwritten.append(audit_values(values[start : start + AUDIT_ROW_LENGTH]))

        totals = self._stat_totals
        values = _pop_values(self._stats, len(self._stats) // STAT_ROW_LENGTH * STAT_ROW_LENGTH)
        for start in range(0, len(values), STAT_ROW_LENGTH):
            created_at, action, tier, mode, in_cohort, reason, would_block = values[start : start + STAT_ROW_LENGTH]
            minute = int(created_at // 60) * 60
            counts = totals.get((minute, action, tier, mode, in_cohort, reason))
            if counts is None:
                totals[(minute, action, tier, mode, in_cohort, reason)] = [1, int(would_block)]
            else:
                counts[0] += 1
                counts[1] += would_block

    def _write_collected(self) -> None:
        """Write the collected rows in batches; rows stay collected until their part of a batch commits."""
        while self._unwritten:
            batch = self._unwritten[: self.batch_size]
            parts = self._split(batch)
            if len(parts) == 1:
                self._insert_audits(batch)
                del self._unwritten[: len(batch)]
                self.written += len(batch)
                continue

            # Each part is one COPY on its own connection, so the server inserts them in parallel.
            pool = self._copy_pool
            if pool is None:
                pool = self._copy_pool = ThreadPoolExecutor(self.copy_connections - 1, "rampgate-audit-copy")
            futures = [pool.submit(self._insert_audits, part, slot) for slot, part in enumerate(parts[1:], 1)]
            errors: list[BaseException] = []
            kept: list[tuple[Any, ...]] = []
            try:
                self._insert_audits(parts[0], 0)
            except WRITE_ERRORS as error:
                errors.append(error)
                kept += parts[0]
            for part, future in zip(parts[1:], futures):
                try:
                    future.result()
                except WRITE_ERRORS as error:
                    errors.append(error)
                    kept += part
            self._unwritten[: len(batch)] = kept
            self.written += len(batch) - len(kept)
            if errors:
                raise errors[0]
        if self._stat_totals:
            self._upsert_stats(self._stat_totals)
            self._stat_totals = {}

    def _split(self, batch: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
        """Cut a batch into one part per COPY connection, none smaller than ``MIN_PARALLEL_ROWS``."""
        parts = min(self.copy_connections, max(len(batch) // MIN_PARALLEL_ROWS, 1)) if self.is_postgres else 1
        if parts == 1:
            return [batch]
        size = -(-len(batch) // parts)
        return [batch[start : start + size] for start in range(0, len(batch), size)]

    def _record_failure(self, error: BaseException) -> None:
        self.write_errors += 1
        self._close_copy_connections()
        self._backoff = min(max(self._backoff * 2, 0.5), 5.0)
        self._retry_at = time.monotonic() + self._backoff
        logger.warning(
            "audit.write_failed",
            extra={"error": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                   "queued": self.queue_depth, "retry_in_seconds": self._backoff,
                   "target": _describe_engine(self.engine)},
        )

    def flush(self) -> None:
        """Write everything queued in memory now; raise if the database fails (the rows stay queued).

        Spill files are left to the writer thread and :meth:`close`, so a
        caller that needs its own recent rows does not wait for a backlog.
        """
        with self._flush_lock:
            while self._audits or self._stats or self._unwritten or self._stat_totals:
                self._collect()
                self._write_collected()

    def close(self) -> None:
        """Stop the writer and write what is left; spill it if the database is down."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            self.flush()
            with self._flush_lock:
                self._replay_spilled(max_files=None)
        except WRITE_ERRORS as error:
            with self._flush_lock:
                self._collect()
                while self._audits:
                    self._collect()
                    self._spill_collected()
                self._spill_collected()
            logger.warning(
                "audit.spilled_on_close",
                extra={"error": str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                       "spilled_total": self.spilled, "spill_directory": str(self.spill_directory)},
            )
        finally:
            if self._copy_pool is not None:
                self._copy_pool.shutdown()
                self._copy_pool = None
            self._close_copy_connections()

    # -- database writes -------------------------------------------------------

    def _insert_audits(self, rows: list[tuple[Any, ...]], slot: int = 0) -> None:
        """Insert audit rows: by COPY on connection ``slot`` on PostgreSQL, a multi-row insert on SQLite."""
        if self.is_postgres:
            connection = self._copy_connections[slot]
            if connection is None or connection.closed:
                connection = self._copy_connections[slot] = psycopg.connect(
                    _libpq_url(self.engine), connect_timeout=5, application_name="rampgate-audit-writer"
                )
            try:
                with connection.transaction():
                    with connection.cursor() as cursor:
                        # A worker thread sends the data, so the rows are formatted
                        # while the server is still inserting the previous ones.
                        with cursor.copy(COPY_AUDITS, writer=QueuedLibpqWriter(cursor)) as copy:
                            copy.set_types(COPY_TYPES)
                            write_row = copy.write_row
                            for row in rows:
                                write_row((*row[:7], JSONB_VERSION + row[7].encode(), _timestamp(row[8])))
            except psycopg.Error:
                self._copy_connections[slot] = None
                connection.close()
                raise
            return

        # The JSON text and the timestamp go to SQLite as they are: through the
        # table's JSON and DateTime types each row cost about three times as
        # much, parsed, bound and formatted again in the writer thread.
        values = [(*row[:8], _sqlite_timestamp(row[8])) for row in rows]
        with self.engine.begin() as database:
            database.exec_driver_sql(INSERT_AUDITS_SQLITE, values)

    def _upsert_stats(self, totals: dict[StatKey, list[int]]) -> None:
        values = [
            {
                "minute": _timestamp(key[0]),
                "action": key[1],
                "tier": key[2],
                "mode": key[3],
                "in_cohort": key[4],
                "reason": key[5],
                "decisions": counts[0],
                "would_block": counts[1],
            }
            for key, counts in totals.items()
        ]
        table = schema.rate_limit_decision_stats
        with self.engine.begin() as connection:
            insert = pg_insert(table) if self.is_postgres else sqlite_insert(table)
            statement = insert.on_conflict_do_update(
                index_elements=["minute", "action", "tier", "mode", "in_cohort", "reason"],
                set_={
                    "decisions": table.c.decisions + insert.excluded.decisions,
                    "would_block": table.c.would_block + insert.excluded.would_block,
                },
            )
            connection.execute(statement, values)

    def _close_copy_connections(self) -> None:
        for slot, connection in enumerate(self._copy_connections):
            self._copy_connections[slot] = None
            if connection is not None:
                try:
                    connection.close()
                except psycopg.Error:
                    pass

    # -- spill files -----------------------------------------------------------

    def _spill_if_full(self) -> None:
        """While the database is down, move rows to disk once half the buffer is waiting."""
        if len(self._unwritten) + len(self._audits) // AUDIT_ROW_LENGTH >= self.max_buffer // 2:
            self._collect()
            self._spill_collected()
            # The queue may have refilled while the first part was being written.
            if len(self._audits) // AUDIT_ROW_LENGTH >= self.max_buffer // 2:
                self._collect()
                self._spill_collected()

    def _spill_collected(self) -> None:
        """Write the collected rows and decision counts to spill files; drop them if that fails."""
        lines = [json.dumps(["a", *row], separators=(",", ":")) for row in self._unwritten]
        lines += [json.dumps(["s", *key, *counts], separators=(",", ":")) for key, counts in self._stat_totals.items()]
        audit_rows = len(self._unwritten)
        self._unwritten = []
        self._stat_totals = {}
        if not lines:
            return

        try:
            self.spill_directory.mkdir(parents=True, exist_ok=True)
            if _directory_bytes(self.spill_directory) >= self.max_spill_bytes:
                raise OSError(f"spill directory {self.spill_directory} contains {self.max_spill_bytes} bytes or more")
            for start in range(0, len(lines), SPILL_FILE_ROWS):
                self._write_spill_file(lines[start : start + SPILL_FILE_ROWS])
        except OSError as error:
            logger.error(
                "audit.spill_failed",
                extra={"error": str(error), "spill_directory": str(self.spill_directory), "rows": audit_rows},
            )
            self._drop(audit_rows)
            return
        self.spilled += audit_rows
        logger.warning(
            "audit.spilled",
            extra={"rows": audit_rows, "spilled_total": self.spilled, "spill_directory": str(self.spill_directory)},
        )

    def _write_spill_file(self, lines: list[str]) -> None:
        self._spill_sequence += 1
        name = f"audit-{time.time_ns():020d}-{os.getpid()}-{self._spill_sequence:06d}.jsonl"
        partial = self.spill_directory / (name + ".part")
        with open(partial, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        # A complete file appears under its final name at once, so a replay never reads half a file.
        os.replace(partial, self.spill_directory / name)

    def _replay_spilled(self, max_files: int | None) -> None:
        """Insert spill files, oldest first, each in one transaction, and delete them."""
        if not self.spill_directory.is_dir():
            return
        replayed_files = 0
        for path in sorted(self.spill_directory.glob("audit-*.jsonl")):
            if max_files is not None and replayed_files >= max_files:
                return
            claimed = path.with_name(f"{path.name}.claimed-{os.getpid()}")
            try:
                os.rename(path, claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            try:
                audits, totals = _read_spill_file(claimed)
                self._write_spilled(audits, totals)
            except BaseException:
                os.rename(claimed, path)
                raise
            claimed.unlink()
            replayed_files += 1
            self.replayed += len(audits)
            self.written += len(audits)
            logger.info("audit.replayed", extra={"rows": len(audits), "file": path.name})

    def _write_spilled(self, audits: list[tuple[Any, ...]], totals: dict[StatKey, list[int]]) -> None:
        # One transaction per file on PostgreSQL, so a file is replayed whole or not at all.
        for start in range(0, len(audits), SPILL_FILE_ROWS):
            self._insert_audits(audits[start : start + SPILL_FILE_ROWS])
        if totals:
            self._upsert_stats(totals)

    def _release_stale_claims(self) -> None:
        """Give back files claimed by processes that died while replaying them."""
        if not self.spill_directory.is_dir():
            return
        for path in self.spill_directory.glob("audit-*.jsonl.claimed-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _is_alive(int(pid)):
                try:
                    os.rename(path, path.with_name(path.name.split(".claimed-", 1)[0]))
                except OSError:
                    continue


def _pop_values(queue: deque[Any], count: int) -> list[Any]:
    """Take the first ``count`` values off ``queue``, which other threads may extend meanwhile."""
    popleft = queue.popleft
    return [popleft() for _ in range(count)]


def _read_spill_file(path: Path) -> tuple[list[tuple[Any, ...]], dict[StatKey, list[int]]]:
    audits: list[tuple[Any, ...]] = []
    totals: dict[StatKey, list[int]] = {}
    skipped = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                item = json.loads(line)
            except ValueError:
                skipped += 1
                continue
            if item[0] == "a" and len(item) == 10:
                audits.append(tuple(item[1:]))
            elif item[0] == "s" and len(item) == 9:
                key: StatKey = (item[1], item[2], item[3], item[4], item[5], item[6])
                counts = totals.setdefault(key, [0, 0])
                counts[0] += item[7]
                counts[1] += item[8]
            else:
                skipped += 1
    if skipped:
        logger.warning("audit.spill_lines_skipped", extra={"file": path.name, "lines": skipped})
    return audits, totals


def _directory_bytes(directory: Path) -> int:
    total = 0
    for entry in os.scandir(directory):
        if entry.is_file():
            total += entry.stat().st_size
    return total


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _libpq_url(engine: Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _describe_engine(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return url.database or "sqlite in memory"
    return f"{url.host}:{url.port or 5432}/{url.database}"


def _database_digest(engine: Engine) -> str:
    """Name the spill subdirectory after the database, without its password."""
    url = engine.url
    identity = f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
    return hashlib.sha1(identity.encode()).hexdigest()[:16]


def prune_audits(engine: Engine, older_than_seconds: float, batch_size: int = 10_000) -> dict[str, int]:
    """Delete audit rows and decision counts older than ``older_than_seconds``, in batches.

    Each batch runs in its own short transaction, so pruning a large table
    never holds locks for long. Returns ``{"audits": n, "decision_stats": m}``,
    the rows deleted from each table.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = datetime.now(UTC).timestamp() - older_than_seconds
    cutoff_at = _timestamp(cutoff)
    audits = schema.rate_limit_audits
    stats = schema.rate_limit_decision_stats
    row_id: sa.ColumnElement[Any] = sa.literal_column("ctid" if engine.dialect.name == "postgresql" else "rowid")

    audit_batch = sa.delete(audits).where(
        audits.c.audit_id.in_(
            sa.select(audits.c.audit_id).where(audits.c.created_at < cutoff_at).limit(batch_size).scalar_subquery()
        )
    )
    stats_batch = sa.delete(stats).where(
        row_id.in_(sa.select(row_id).select_from(stats).where(stats.c.minute < cutoff_at).limit(batch_size).scalar_subquery())
    )
    return {
        "audits": _delete_in_batches(engine, audit_batch, batch_size),
        "decision_stats": _delete_in_batches(engine, stats_batch, batch_size),
    }


def _delete_in_batches(engine: Engine, statement: Any, batch_size: int) -> int:
    deleted = 0
    while True:
        with engine.begin() as connection:
            count = connection.execute(statement).rowcount
        deleted += count
        if count < batch_size:
            return deleted
