"""Controller leases: one controller at a time acts on a flag.

A lease is a row of ``controller_leases`` naming its holder and when it
expires. The holder renews it on every tick; another controller takes it
over only after it has expired, so a controller that was killed hands over
after at most one lease period. The same SQL runs on PostgreSQL and SQLite
(``insert … on conflict … do update … where``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from rampgate.catalog import schema
from rampgate.rollout.store import to_datetime, to_seconds

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0


def new_holder_name() -> str:
    """Return a holder name unique to this controller: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ControllerLease:
    """The lease on one flag, as seen by one would-be holder.

    ``lease_seconds`` is how long the lease lasts without renewal. Expiry is
    judged with the clocks of the controllers' machines.

    NOTE: two controllers whose clocks differ by more than ``lease_seconds``
    can both believe they hold the lease; the optimistic ``version`` check of
    the rollout row still stops them from both recording a transition.
    """

    def __init__(
        self,
        engine: Engine,
        flag_name: str,
        holder: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be more than 0, not {lease_seconds}")
        self.engine = engine
        self.flag_name = flag_name
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.held = False

    def acquire(self) -> bool:
        """Take the lease if it is free or expired, or renew it if held; return whether it is held now."""
        now = self.clock()
        table = schema.controller_leases
        values = {"flag_name": self.flag_name, "holder": self.holder, "expires_at": to_datetime(now + self.lease_seconds)}
        with self.engine.begin() as connection:
            insert = pg_insert(table) if connection.dialect.name == "postgresql" else sqlite_insert(table)
            statement = insert.values(**values).on_conflict_do_update(
                index_elements=[table.c.flag_name],
                set_={"holder": insert.excluded.holder, "expires_at": insert.excluded.expires_at},
                where=sa.or_(table.c.holder == self.holder, table.c.expires_at < to_datetime(now)),
            )
            connection.execute(statement)
            holder = connection.execute(
                sa.select(table.c.holder).where(table.c.flag_name == self.flag_name)
            ).scalar_one()

        was_held = self.held
        self.held = holder == self.holder
        if self.held and not was_held:
            logger.info("rollout.lease_acquired", extra={"flag": self.flag_name, "holder": self.holder})
        elif was_held and not self.held:
            logger.warning(
                "rollout.lease_lost",
                extra={"flag": self.flag_name, "holder": self.holder, "new_holder": holder},
            )
        return self.held

    def current_holder(self) -> str | None:
        """Return the holder of an unexpired lease on the flag, or None."""
        table = schema.controller_leases
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(table).where(table.c.flag_name == self.flag_name)).first()
        if row is None:
            return None
        return row.holder if to_seconds(row.expires_at) >= self.clock() else None

    def release(self) -> None:
        """Give the lease up so that another controller can take over at once."""
        if not self.held:
            return
        table = schema.controller_leases
        with self.engine.begin() as connection:
            connection.execute(
                sa.delete(table).where(table.c.flag_name == self.flag_name, table.c.holder == self.holder)
            )
        self.held = False
        logger.info("rollout.lease_released", extra={"flag": self.flag_name, "holder": self.holder})
