"""Rollouts and their transitions in the catalog database, with optimistic concurrency.

Every change of a rollout row checks and bumps its ``version`` column, and the
new transitions are inserted in the same transaction with consecutive
``seq`` numbers (unique per rollout). Two writers that loaded the same
version cannot both save: the second gets :class:`Conflict` and reloads the
first one's result, so no transition is recorded twice.

The fields of :class:`Rollout` that have no column are derived from the
transitions: the stage was entered at its last ``started`` or ``promoted``
transition, its evidence began at the last of those or a ``resumed``, and it
was extended when an ``extended`` transition follows that.

A flag change that a transition calls for is written in the same transaction
as the transition, with its config-change record, so a process that watches
the flag never sees the flag changed by the rollout before the rollout
itself (and so never takes the rollout's own change for a change made
elsewhere), and a crash between the two cannot leave them apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rampgate.catalog import schema
from rampgate.catalog.repository import Catalog, as_utc, flag_from_row, flag_to_dict
from rampgate.core.flags import Flag
from rampgate.core.plans import plan_from_dict, plan_to_document
from rampgate.core.rollout import FINAL_STATES, PAUSED, RUNNING, FlagChange, Rollout, Transition
from rampgate.errors import Conflict, NotFound

logger = logging.getLogger(__name__)

ACTIVE_STATES: tuple[str, ...] = (RUNNING, PAUSED)
_STAGE_ENTRY_EVENTS = frozenset({"started", "promoted"})
_EVIDENCE_EVENTS = frozenset({"started", "promoted", "resumed"})


def to_datetime(seconds: float) -> datetime:
    """Return Unix ``seconds`` as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, timezone.utc)


def to_seconds(value: datetime) -> float:
    """Return a datetime from the database as Unix seconds (naive values are UTC)."""
    aware = as_utc(value)
    assert aware is not None
    return aware.timestamp()


@dataclass
class RolloutRecord:
    """A stored rollout: the machine plus the row's id, version and timestamps.

    ``stored_transitions`` counts the transitions already in the database;
    those after it in ``rollout.transitions`` are new and are inserted by
    :meth:`RolloutStore.save`.
    """

    rollout_id: int
    version: int
    rollout: Rollout
    created_at: float
    updated_at: float
    stored_transitions: int

    @property
    def flag_name(self) -> str:
        return self.rollout.flag_name

    @property
    def new_transitions(self) -> list[Transition]:
        return self.rollout.transitions[self.stored_transitions :]


class RolloutStore:
    """Reads and writes the ``rollouts`` and ``rollout_transitions`` tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reading ---------------------------------------------------------

    def get(self, rollout_id: int) -> RolloutRecord:
        """Return one rollout; raise :class:`NotFound` when there is none with that id."""
        table = schema.rollouts
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(table).where(table.c.rollout_id == rollout_id)).first()
            if row is None:
                raise NotFound(f"rollout {rollout_id} not found")
            return self._record(connection, row)

    def latest(self, flag_name: str) -> RolloutRecord | None:
        """Return the newest rollout of the flag, whatever its state, or None."""
        table = schema.rollouts
        query = (
            sa.select(table)
            .where(table.c.flag_name == flag_name)
            .order_by(table.c.rollout_id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
            return None if row is None else self._record(connection, row)

    def active(self, flag_name: str) -> RolloutRecord | None:
        """Return the running or paused rollout of the flag, or None."""
        record = self.latest(flag_name)
        if record is None or record.rollout.state not in ACTIVE_STATES:
            return None
        return record

    def active_flags(self) -> list[str]:
        """Return the flags that have a running or paused rollout, by name."""
        table = schema.rollouts
        query = (
            sa.select(table.c.flag_name)
            .where(table.c.state.in_(ACTIVE_STATES))
            .distinct()
            .order_by(table.c.flag_name)
        )
        with self.engine.connect() as connection:
            return [row.flag_name for row in connection.execute(query)]

    def latest_per_flag(self) -> list[RolloutRecord]:
        """Return the newest rollout of every flag that ever had one, by flag name."""
        table = schema.rollouts
        newest = (
            sa.select(sa.func.max(table.c.rollout_id)).group_by(table.c.flag_name).scalar_subquery()
        )
        query = sa.select(table).where(table.c.rollout_id.in_(newest)).order_by(table.c.flag_name)
        with self.engine.connect() as connection:
            return [self._record(connection, row) for row in connection.execute(query).all()]

    def _record(self, connection: Connection, row: Any) -> RolloutRecord:
        transitions = self._transitions(connection, int(row.rollout_id))
        created_at = to_seconds(row.created_at)
        stage_entered_at = created_at
        evidence_since = created_at
        extended = False
        for transition in transitions:
            if transition.event in _STAGE_ENTRY_EVENTS:
                stage_entered_at = transition.at
            if transition.event in _EVIDENCE_EVENTS:
                evidence_since = transition.at
                extended = False
            elif transition.event == "extended":
                extended = True

        rollout = Rollout(
            flag_name=row.flag_name,
            plan=plan_from_dict(dict(row.plan)),
            state=row.state,
            stage=int(row.stage),
            stage_entered_at=stage_entered_at,
            stage_started_at=None if row.stage_started_at is None else to_seconds(row.stage_started_at),
            baked_seconds=float(row.baked_seconds),
            extended=extended,
            failed_gate=None if row.failed_gate is None else dict(row.failed_gate),
            transitions=transitions,
            evidence_since=evidence_since,
        )
        return RolloutRecord(
            rollout_id=int(row.rollout_id),
            version=int(row.version),
            rollout=rollout,
            created_at=created_at,
            updated_at=to_seconds(row.updated_at),
            stored_transitions=len(transitions),
        )

    @staticmethod
    def _transitions(connection: Connection, rollout_id: int) -> list[Transition]:
        table = schema.rollout_transitions
        rows = connection.execute(
            sa.select(table).where(table.c.rollout_id == rollout_id).order_by(table.c.seq)
        )
        return [
            Transition(
                at=to_seconds(row.at),
                event=row.event,
                stage=int(row.stage),
                percentage=int(row.percentage),
                reason=row.reason,
                details=None if row.details is None else dict(row.details),
            )
            for row in rows
        ]

    # -- writing ---------------------------------------------------------

    def create(
        self,
        rollout: Rollout,
        now: float,
        flag_change: FlagChange | None = None,
        *,
        changed_by: str = "controller",
        via: str = "controller",
    ) -> RolloutRecord:
        """Insert a new rollout with its transitions so far, and apply ``flag_change``.

        Raises :class:`Conflict` when the flag already has a running or paused
        rollout, and :class:`NotFound` when the flag does not exist. The check
        and the insert hold a lock on the flag's row, so two concurrent starts
        cannot both succeed.
        """
        table = schema.rollouts
        with self.engine.begin() as connection:
            self._lock_flag(connection, rollout.flag_name)
            running = connection.execute(
                sa.select(table.c.rollout_id, table.c.state)
                .where(table.c.flag_name == rollout.flag_name, table.c.state.in_(ACTIVE_STATES))
                .limit(1)
            ).first()
            if running is not None:
                raise Conflict(
                    f"flag {rollout.flag_name!r} already has a {running.state} rollout "
                    f"(id {running.rollout_id}); abort it first with `rampgate rollout abort {rollout.flag_name}`"
                )
            rollout_id = connection.execute(
                sa.insert(table)
                .values(
                    flag_name=rollout.flag_name,
                    created_at=to_datetime(now),
                    plan=plan_to_document(rollout.plan),
                    version=1,
                    **self._values(rollout, now),
                )
                .returning(table.c.rollout_id)
            ).scalar_one()
            self._insert_transitions(connection, int(rollout_id), 0, rollout.transitions)
            if flag_change is not None:
                apply_flag_change(connection, rollout.flag_name, flag_change, changed_by, via)

        logger.info("rollout.created", extra={"flag": rollout.flag_name, "rollout_id": int(rollout_id)})
        return RolloutRecord(int(rollout_id), 1, rollout, now, now, len(rollout.transitions))

    def save(
        self,
        record: RolloutRecord,
        now: float,
        flag_change: FlagChange | None = None,
        *,
        changed_by: str = "controller",
        via: str = "controller",
    ) -> RolloutRecord:
        """Store the rollout's state, its new transitions and ``flag_change``; return the record at its new version.

        Raises :class:`Conflict` when another writer saved the rollout since
        ``record`` was loaded; nothing is written then.
        """
        table = schema.rollouts
        new = record.new_transitions
        with self.engine.begin() as connection:
            updated = connection.execute(
                sa.update(table)
                .where(table.c.rollout_id == record.rollout_id, table.c.version == record.version)
                .values(version=record.version + 1, **self._values(record.rollout, now))
            )
            if updated.rowcount != 1:
                raise Conflict(
                    f"rollout {record.rollout_id} of flag {record.flag_name!r} changed since version "
                    f"{record.version} was read; read it again"
                )
            self._insert_transitions(connection, record.rollout_id, record.stored_transitions, new)
            if flag_change is not None:
                apply_flag_change(connection, record.flag_name, flag_change, changed_by, via)

        return RolloutRecord(
            record.rollout_id,
            record.version + 1,
            record.rollout,
            record.created_at,
            now,
            record.stored_transitions + len(new),
        )

    @staticmethod
    def _values(rollout: Rollout, now: float) -> dict[str, Any]:
        return {
            "state": rollout.state,
            "stage": rollout.stage,
            "stage_started_at": None if rollout.stage_started_at is None else to_datetime(rollout.stage_started_at),
            "baked_seconds": rollout.baked_seconds,
            "failed_gate": rollout.failed_gate,
            "updated_at": to_datetime(now),
        }

    @staticmethod
    def _insert_transitions(
        connection: Connection, rollout_id: int, first_seq: int, transitions: list[Transition]
    ) -> None:
        if not transitions:
            return
        connection.execute(
            sa.insert(schema.rollout_transitions),
            [
                {
                    "rollout_id": rollout_id,
                    "seq": first_seq + number,
                    "at": to_datetime(transition.at),
                    "event": transition.event,
                    "stage": transition.stage,
                    "percentage": transition.percentage,
                    "reason": transition.reason,
                    "details": transition.details,
                }
                for number, transition in enumerate(transitions, 1)
            ],
        )

    @staticmethod
    def _lock_flag(connection: Connection, flag_name: str) -> None:
        flags = schema.feature_flags
        if connection.dialect.name == "postgresql":
            row = connection.execute(
                sa.select(flags.c.flag_name).where(flags.c.flag_name == flag_name).with_for_update()
            ).first()
            found = row is not None
        else:
            # SQLite has no row locks; a write takes the database's write lock
            # at once, which serialises concurrent starts.
            found = (
                connection.execute(
                    sa.update(flags).where(flags.c.flag_name == flag_name).values(flag_name=flags.c.flag_name)
                ).rowcount
                == 1
            )
        if not found:
            raise NotFound(f"flag {flag_name!r} not found; `rampgate flag show` lists the flags")


def apply_flag_change(connection: Connection, flag_name: str, change: FlagChange, changed_by: str, via: str) -> Flag:
    """Set the flag's ``enabled`` and ``rollout_percentage`` in ``connection``'s transaction.

    The change is recorded in ``config_changes`` and logged as
    ``Catalog.set_flag`` does; other config keys are kept.
    """
    flags = schema.feature_flags
    row = connection.execute(sa.select(flags).where(flags.c.flag_name == flag_name)).first()
    if row is None:
        raise NotFound(f"flag {flag_name!r} not found; `rampgate flag show` lists the flags")
    before = flag_from_row(row)
    after = Flag(flag_name, change.enabled, change.percentage, before.config)

    connection.execute(
        sa.update(flags)
        .where(flags.c.flag_name == flag_name)
        .values(enabled=change.enabled, rollout_percentage=change.percentage, updated_at=to_datetime(_wall_clock()))
    )
    Catalog.record_change(connection, changed_by, via, "flag", flag_name, flag_to_dict(before), flag_to_dict(after))
    logger.info(
        "flag.changed",
        extra={"flag": flag_name, "enabled": change.enabled, "percentage": change.percentage, "via": via},
    )
    return after


def _wall_clock() -> float:
    return datetime.now(timezone.utc).timestamp()


def is_final(record: RolloutRecord | None) -> bool:
    return record is None or record.rollout.state in FINAL_STATES
