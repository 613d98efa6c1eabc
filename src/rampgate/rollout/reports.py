"""Operator reports over the audit trail: who is blocked, on what, when.

Every report reads ``rate_limit_audits`` (one row per enforced decision)
since a moment, with the same SQL on PostgreSQL and SQLite, and returns
plain rows ready for JSON. Hours and minutes are UTC. ``block_rate`` is
``blocked / decisions``, rounded to 6 digits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rampgate.catalog import schema
from rampgate.catalog.repository import as_utc, isoformat

REPORTS: tuple[str, ...] = ("top-blocked", "by-action", "by-hour", "recent")
RATE_DIGITS = 6


def _rate(blocked: int, decisions: int) -> float:
    return round(blocked / decisions, RATE_DIGITS) if decisions else 0.0


def _blocked_count() -> Any:
    audits = schema.rate_limit_audits
    return sa.func.coalesce(sa.func.sum(sa.case((audits.c.allowed == sa.false(), 1), else_=0)), 0)


def _allowed_count() -> Any:
    audits = schema.rate_limit_audits
    return sa.func.coalesce(sa.func.sum(sa.case((audits.c.allowed == sa.true(), 1), else_=0)), 0)


def _truncated(connection: Connection, unit: str) -> Any:
    """Return ``created_at`` cut to the UTC ``hour`` or ``minute``, as a sortable expression."""
    created_at = schema.rate_limit_audits.c.created_at
    if connection.dialect.name == "postgresql":
        return sa.func.date_trunc(unit, sa.func.timezone("UTC", created_at))
    pattern = "%Y-%m-%d %H:00:00" if unit == "hour" else "%Y-%m-%d %H:%M:00"
    return sa.func.strftime(pattern, created_at)


def _bucket_text(value: Any) -> str | None:
    """Return a truncated time from either database as ISO 8601 UTC with ``Z``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return isoformat(as_utc(value))


def top_blocked(engine: Engine, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """Return the actor and action pairs blocked most often since ``since``, most blocked first.

    Pairs without a block are left out; ties are ordered by actor and action.
    """
    audits = schema.rate_limit_audits
    blocked = _blocked_count().label("blocked")
    allowed = _allowed_count().label("allowed")
    query = (
        sa.select(audits.c.actor_type, audits.c.actor_id, audits.c.action, blocked, allowed)
        .where(audits.c.created_at > since)
        .group_by(audits.c.actor_type, audits.c.actor_id, audits.c.action)
        .having(_blocked_count() > 0)
        .order_by(blocked.desc(), audits.c.actor_type, audits.c.actor_id, audits.c.action)
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        {
            "actor_type": row.actor_type,
            "actor_id": row.actor_id,
            "action": row.action,
            "blocked": int(row.blocked),
            "allowed": int(row.allowed),
            "block_rate": _rate(int(row.blocked), int(row.blocked) + int(row.allowed)),
        }
        for row in rows
    ]


def by_action(engine: Engine, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """Return enforced decisions and blocks per action since ``since``, most blocked first."""
    audits = schema.rate_limit_audits
    decisions = sa.func.count().label("decisions")
    blocked = _blocked_count().label("blocked")
    query = (
        sa.select(audits.c.action, decisions, blocked)
        .where(audits.c.created_at > since)
        .group_by(audits.c.action)
        .order_by(blocked.desc(), decisions.desc(), audits.c.action)
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        {
            "action": row.action,
            "decisions": int(row.decisions),
            "blocked": int(row.blocked),
            "block_rate": _rate(int(row.blocked), int(row.decisions)),
        }
        for row in rows
    ]


def by_hour(engine: Engine, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """Return enforced decisions and blocks per UTC hour since ``since``.

    The ``limit`` most recent hours that had decisions are returned, oldest first.
    """
    audits = schema.rate_limit_audits
    with engine.connect() as connection:
        hour = _truncated(connection, "hour").label("hour")
        decisions = sa.func.count().label("decisions")
        blocked = _blocked_count().label("blocked")
        query = (
            sa.select(hour, decisions, blocked)
            .where(audits.c.created_at > since)
            .group_by(hour)
            .order_by(hour.desc())
            .limit(limit)
        )
        rows = connection.execute(query).all()
    return [
        {
            "hour": _bucket_text(row.hour),
            "decisions": int(row.decisions),
            "blocked": int(row.blocked),
            "block_rate": _rate(int(row.blocked), int(row.decisions)),
        }
        for row in reversed(rows)
    ]


def recent_blocks(engine: Engine, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """Return the newest blocked decisions since ``since``, newest first."""
    audits = schema.rate_limit_audits
    query = (
        sa.select(audits)
        .where(audits.c.created_at > since, audits.c.allowed == sa.false())
        .order_by(audits.c.created_at.desc(), audits.c.audit_id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    documents = []
    for row in rows:
        context = dict(row.context or {})
        documents.append(
            {
                "at": isoformat(row.created_at),
                "actor_type": row.actor_type,
                "actor_id": row.actor_id,
                "action": row.action,
                "tier": context.get("tier"),
                "policy": context.get("policy"),
                "reason": context.get("reason"),
                "request_id": row.request_id,
            }
        )
    return documents


def timeseries(engine: Engine, since: datetime) -> list[dict[str, Any]]:
    """Return enforced decisions and blocks per UTC minute and action since ``since``, oldest first."""
    audits = schema.rate_limit_audits
    with engine.connect() as connection:
        minute = _truncated(connection, "minute").label("minute")
        decisions = sa.func.count().label("decisions")
        blocked = _blocked_count().label("blocked")
        query = (
            sa.select(minute, audits.c.action, decisions, blocked)
            .where(audits.c.created_at > since)
            .group_by(minute, audits.c.action)
            .order_by(minute, audits.c.action)
        )
        rows = connection.execute(query).all()
    return [
        {
            "minute": _bucket_text(row.minute),
            "action": row.action,
            "decisions": int(row.decisions),
            "blocked": int(row.blocked),
        }
        for row in rows
    ]


def run_report(engine: Engine, name: str, since: datetime, limit: int = 10) -> list[dict[str, Any]]:
    """Run the report called ``name`` (one of :data:`REPORTS`)."""
    if name == "top-blocked":
        return top_blocked(engine, since, limit)
    if name == "by-action":
        return by_action(engine, since, limit)
    if name == "by-hour":
        return by_hour(engine, since, limit)
    if name == "recent":
        return recent_blocks(engine, since, limit)
    raise ValueError(f"unknown report {name!r}; expected one of " + ", ".join(REPORTS))
