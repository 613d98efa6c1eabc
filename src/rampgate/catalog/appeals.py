"""Appeals: end users contesting a block, and the operators' verdicts on them.

An appeal counts as a complaint for the rollout gates. An upheld appeal marks
its actor as known legitimate, which the false-positive gate reads.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rampgate.catalog import schema
from rampgate.catalog.repository import Catalog, isoformat, utcnow
from rampgate.core.names import check_action, check_actor_id, check_actor_type
from rampgate.errors import Conflict, InvalidInput, NotFound

logger = logging.getLogger(__name__)

OPEN = "open"
UPHELD = "upheld"
REJECTED = "rejected"
STATUSES: tuple[str, ...] = (OPEN, UPHELD, REJECTED)

MAX_TEXT_LENGTH = 2000
MAX_REQUEST_ID_LENGTH = 128
# How far back a block must lie for its actor to appeal it through the API.
BLOCK_LOOKBACK = timedelta(hours=24)


def appeal_to_dict(row: Any) -> dict[str, Any]:
    return {
        "appeal_id": int(row.appeal_id),
        "actor_type": row.actor_type,
        "actor_id": row.actor_id,
        "action": row.action,
        "request_id": row.request_id,
        "text": row.text,
        "status": row.status,
        "created_at": isoformat(row.created_at),
        "resolved_at": isoformat(row.resolved_at),
        "resolved_by": row.resolved_by,
        "resolution_note": row.resolution_note,
    }


class AppealRepository:
    """Reads and writes of the ``appeals`` table.

    Verdicts are recorded in the config-change history with who gave them,
    like every other operator change.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- filing -------------------------------------------------------------

    def file(
        self,
        actor_type: str,
        actor_id: str,
        action: str,
        text: str,
        request_id: str | None = None,
        *,
        require_recent_block: bool = True,
    ) -> dict[str, Any]:
        """File an appeal and return it.

        With ``require_recent_block`` (the API's case) the actor must have
        been blocked on ``action`` within the last 24 hours. Without that
        rule, anyone with a valid end-user token could add complaints against
        a rollout. One actor may have one open appeal per action, so a second
        one raises :class:`Conflict` naming the first.
        """
        check_actor_type(actor_type)
        check_actor_id(actor_id)
        check_action(action)
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT_LENGTH:
            raise InvalidInput("text", text, f"a string of 1 to {MAX_TEXT_LENGTH} characters")
        if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_LENGTH):
            raise InvalidInput("request_id", request_id, f"a string of at most {MAX_REQUEST_ID_LENGTH} characters")

        # The check names the open appeal; the unique index on open appeals
        # stops a filing that raced past the check.
        try:
            with self.engine.begin() as connection:
                if require_recent_block and not self._was_blocked(connection, actor_type, actor_id, action):
                    raise InvalidInput(
                        "action", action, "an action on which this user was blocked in the last 24 hours"
                    )
                self._check_none_open(connection, actor_type, actor_id, action)
                appeal_id = self._insert(connection, actor_type, actor_id, action, text, request_id)
                appeal = self._get(connection, appeal_id)
        except sa.exc.IntegrityError as error:
            with self.engine.connect() as connection:
                self._check_none_open(connection, actor_type, actor_id, action)
            raise Conflict(f"another appeal on {action} was filed at the same moment; list the appeals and retry") from error

        logger.info("appeal.filed", extra={"appeal_id": appeal["appeal_id"], "action": action})
        return appeal

    @staticmethod
    def _check_none_open(connection: Connection, actor_type: str, actor_id: str, action: str) -> None:
        """Raise :class:`Conflict` naming the actor's open appeal on ``action``, if there is one."""
        table = schema.appeals
        existing = connection.execute(
            sa.select(table.c.appeal_id).where(
                table.c.actor_type == actor_type,
                table.c.actor_id == actor_id,
                table.c.action == action,
                table.c.status == OPEN,
            )
        ).first()
        if existing is not None:
            raise Conflict(f"appeal {existing.appeal_id} on {action} is still open; wait for its verdict")

    @staticmethod
    def _insert(
        connection: Connection, actor_type: str, actor_id: str, action: str, text: str, request_id: str | None
    ) -> int:
        table = schema.appeals
        appeal_id = connection.execute(
            sa.insert(table)
            .values(
                actor_type=actor_type,
                actor_id=actor_id,
                action=action,
                request_id=request_id,
                text=text,
                status=OPEN,
                created_at=utcnow(),
            )
            .returning(table.c.appeal_id)
        ).scalar_one()
        return int(appeal_id)

    def _was_blocked(self, connection: Connection, actor_type: str, actor_id: str, action: str) -> bool:
        audits = schema.rate_limit_audits
        since: datetime = utcnow() - BLOCK_LOOKBACK
        row = connection.execute(
            sa.select(audits.c.audit_id)
            .where(
                audits.c.actor_type == actor_type,
                audits.c.actor_id == actor_id,
                audits.c.action == action,
                audits.c.allowed.is_(False),
                audits.c.created_at >= since,
            )
            .limit(1)
        ).first()
        return row is not None

    # -- reading ------------------------------------------------------------

    def get(self, appeal_id: int) -> dict[str, Any]:
        with self.engine.connect() as connection:
            return self._get(connection, appeal_id)

    def _get(self, connection: Connection, appeal_id: int) -> dict[str, Any]:
        row = connection.execute(sa.select(schema.appeals).where(schema.appeals.c.appeal_id == appeal_id)).first()
        if row is None:
            raise NotFound(f"appeal {appeal_id} not found; `rampgate appeal list` shows the appeals")
        return appeal_to_dict(row)

    def list(
        self,
        status: str | None = None,
        limit: int = 100,
        actor_type: str | None = None,
        actor_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Return appeals, newest first, optionally of one status or one actor."""
        if status is not None and status not in STATUSES:
            raise InvalidInput("status", status, "one of " + ", ".join(STATUSES))
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInput("limit", limit, "an integer from 1 to 10000")

        table = schema.appeals
        query = sa.select(table).order_by(table.c.appeal_id.desc()).limit(limit)
        if status is not None:
            query = query.where(table.c.status == status)
        if actor_type is not None:
            query = query.where(table.c.actor_type == actor_type)
        if actor_id is not None:
            query = query.where(table.c.actor_id == actor_id)
        with self.engine.connect() as connection:
            return [appeal_to_dict(row) for row in connection.execute(query)]

    def known_legitimate_actors(self) -> set[tuple[str, str]]:
        """Return the ``(actor_type, actor_id)`` pairs with at least one upheld appeal."""
        table = schema.appeals
        query = sa.select(table.c.actor_type, table.c.actor_id).where(table.c.status == UPHELD).distinct()
        with self.engine.connect() as connection:
            return {(row.actor_type, row.actor_id) for row in connection.execute(query)}

    # -- verdicts -----------------------------------------------------------

    def uphold(self, appeal_id: int, *, resolved_by: str, note: str | None = None, via: str = "cli") -> dict[str, Any]:
        """Uphold an open appeal: the block was wrong, and the actor counts as known legitimate from now on."""
        return self._resolve(appeal_id, UPHELD, resolved_by, note, via)

    def reject(self, appeal_id: int, *, resolved_by: str, note: str | None = None, via: str = "cli") -> dict[str, Any]:
        """Reject an open appeal: the block was right."""
        return self._resolve(appeal_id, REJECTED, resolved_by, note, via)

    def _resolve(self, appeal_id: int, status: str, resolved_by: str, note: str | None, via: str) -> dict[str, Any]:
        if note is not None and (not isinstance(note, str) or len(note) > MAX_TEXT_LENGTH):
            raise InvalidInput("note", note, f"a string of at most {MAX_TEXT_LENGTH} characters")

        table = schema.appeals
        with self.engine.begin() as connection:
            before = self._get(connection, appeal_id)
            if before["status"] != OPEN:
                raise Conflict(f"appeal {appeal_id} is already {before['status']}; only open appeals take a verdict")
            result = connection.execute(
                sa.update(table)
                .where(table.c.appeal_id == appeal_id, table.c.status == OPEN)
                .values(status=status, resolved_at=utcnow(), resolved_by=resolved_by, resolution_note=note)
            )
            if result.rowcount != 1:
                raise Conflict(f"appeal {appeal_id} received a verdict from someone else first; list it again")
            after = self._get(connection, appeal_id)
            Catalog.record_change(connection, resolved_by, via, "appeal", str(appeal_id), before, after)

        logger.info("appeal.resolved", extra={"appeal_id": appeal_id, "status": status, "via": via})
        return after
