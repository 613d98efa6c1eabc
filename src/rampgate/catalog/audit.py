"""The audit trail: one row per enforced decision, per-minute counts for the rest.

The request path only appends a tuple to a bounded in-memory queue. A
background thread writes the queue in batches, so a slow or failed database
never delays a decision. Rows that do not fit the buffer are counted as
dropped and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from rampgate.catalog import schema
from rampgate.core.decision import Decision

logger = logging.getLogger(__name__)

# (decision, units, request_id, context, created_at): the row is built by the
# writer thread, so the request path only appends a tuple.
AuditRow = tuple[Decision, int, str | None, dict[str, Any] | None, float]
# (minute, action, tier, mode, in_cohort, reason, would_block)
StatRow = tuple[int, str, str, str, bool, str, bool]


class DecisionRecorder(Protocol):
    """Where :class:`rampgate.Gate` sends every decision it makes."""

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
    """The ``context`` column: the caller's context plus the decision's tier, policy and reason."""
    merged: dict[str, Any] = dict(context) if context else {}
    merged["tier"] = decision.tier
    merged["policy"] = decision.policy
    merged["reason"] = decision.reason
    merged["cost"] = units
    if decision.retry_after:
        merged["retry_after"] = decision.retry_after
    return merged


class AuditWriter:
    """Batches audit rows and decision counts into the catalog database.

    ``max_buffer`` bounds the rows held in memory. ``flush_interval`` is the
    longest a row waits before its batch is written (0.2 s by default, so rows
    are visible within a second).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 0.2,
        max_buffer: int = 100_000,
        batch_size: int = 5_000,
    ) -> None:
        self.engine = engine
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self._audits: deque[AuditRow] = deque()
        self._stats: deque[StatRow] = deque()
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0

    @property
    def queue_depth(self) -> int:
        return len(self._audits) + len(self._stats)

    def record(
        self, decision: Decision, units: int, now: float, request_id: str | None, context: dict[str, Any] | None
    ) -> None:
        if decision.mode == "enforce":
            if len(self._audits) >= self.max_buffer:
                self._drop()
                return
            self._audits.append((decision, units, request_id, context, now))
            return

        if len(self._stats) >= self.max_buffer:
            self._drop()
            return
        self._stats.append(
            (
                int(now // 60) * 60,
                decision.action,
                decision.tier,
                decision.mode,
                decision.in_cohort,
                decision.reason,
                decision.would_block,
            )
        )

    def _drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log > 10:
            self._last_drop_log = now
            logger.warning(
                "audit.dropped",
                extra={"dropped_total": self.dropped, "max_buffer": self.max_buffer,
                       "hint": "the catalog database is slow or down; raise RAMPGATE_AUDIT_BUFFER_ROWS"},
            )

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rampgate-audit-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        backoff = self.flush_interval
        while not self._stop.wait(backoff):
            try:
                self.flush()
                backoff = self.flush_interval
            except sa.exc.SQLAlchemyError as error:
                self.write_errors += 1
                backoff = min(max(backoff * 2, 0.5), 5.0)
                logger.warning(
                    "audit.write_failed",
                    extra={"error": str(error).splitlines()[0], "queued": self.queue_depth, "retry_in_seconds": backoff},
                )

    def flush(self) -> None:
        """Write everything queued; rows stay queued if the write fails."""
        with self._flush_lock:
            while self._audits or self._stats:
                audits = [self._audits[i] for i in range(min(self.batch_size, len(self._audits)))]
                stats = [self._stats[i] for i in range(min(self.batch_size * 10, len(self._stats)))]
                with self.engine.begin() as connection:
                    if audits:
                        connection.execute(sa.insert(schema.rate_limit_audits), [_audit_values(r) for r in audits])
                    if stats:
                        self._write_stats(connection, stats)
                for _ in audits:
                    self._audits.popleft()
                for _ in stats:
                    self._stats.popleft()
                self.written += len(audits)

    def _write_stats(self, connection: sa.Connection, rows: list[StatRow]) -> None:
        totals: dict[tuple[int, str, str, str, bool, str], list[int]] = {}
        for minute, action, tier, mode, in_cohort, reason, would_block in rows:
            counts = totals.setdefault((minute, action, tier, mode, in_cohort, reason), [0, 0])
            counts[0] += 1
            counts[1] += would_block
        values = [
            {
                "minute": datetime.fromtimestamp(key[0], timezone.utc),
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
        insert = pg_insert(table) if connection.dialect.name == "postgresql" else sqlite_insert(table)
        statement = insert.on_conflict_do_update(
            index_elements=["minute", "action", "tier", "mode", "in_cohort", "reason"],
            set_={
                "decisions": table.c.decisions + insert.excluded.decisions,
                "would_block": table.c.would_block + insert.excluded.would_block,
            },
        )
        connection.execute(statement, values)

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except sa.exc.SQLAlchemyError as error:
            logger.error(
                "audit.lost_on_close",
                extra={"error": str(error).splitlines()[0], "rows": self.queue_depth},
            )


def _audit_values(row: AuditRow) -> dict[str, Any]:
    decision, units, request_id, context, created_at = row
    return {
        "actor_type": decision.actor_type,
        "actor_id": decision.actor_id,
        "action": decision.action,
        "allowed": decision.allowed,
        "tokens_available": decision.remaining,
        "tokens_consumed": units if decision.allowed else 0,
        "request_id": request_id,
        "context": audit_context(decision, units, context),
        "created_at": datetime.fromtimestamp(created_at, timezone.utc),
    }
