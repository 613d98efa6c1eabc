"""Gate metrics of a rollout stage, computed with SQL from the audit trail.

The enforced cohort of a stage is every actor with a row in
``rate_limit_audits`` (one row per enforced decision) on an action the flag
governs, between the start of the stage's evidence window and its end. The
queries run unchanged on PostgreSQL and SQLite.

Definitions, per window:

- ``decisions`` / ``blocked``: enforced decisions, and those that were blocked.
- ``actors`` / ``blocked_actors``: actors enforced, and those blocked at least once.
- known abuser: an actor at enforcement level E4 or E5, or of tier D (in the
  audit row's ``context.tier`` or in ``trust_profiles``).
- known legitimate: an actor of tier A (same two sources) or with an upheld
  appeal, who is not a known abuser.
- ``legitimate_actors``: enforced actors that are not known abusers;
  ``legitimate_blocked_actors``: the known-legitimate ones among them that
  were blocked at least once.
- ``complaints``: appeals filed on a governed action during the window.
- ``errors``: fail-open decisions of cohort actors (``rate_limit_decision_stats``
  with mode ``fail_open`` and ``in_cohort``) plus enforced blocks with reason
  ``store_error``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rampgate.catalog import schema
from rampgate.core.flags import Flag
from rampgate.core.gates import StageMetrics
from rampgate.core.plans import Plan

logger = logging.getLogger(__name__)

# NOTE: the tiers and levels below are rampgate's own reading of "known abuser";
# a deployment whose tiers mean something else should add an ``sql`` gate.
ABUSER_LEVELS: tuple[str, ...] = ("E4", "E5")
ABUSER_TIER = "D"
LEGITIMATE_TIER = "A"
SQL_GATE_TIMEOUT_MS = 5000


def _governed(column: Any, flag: Flag) -> Any:
    actions = flag.actions
    return sa.true() if actions is None else column.in_(actions)


def _window(column: Any, since: datetime, until: datetime | None) -> list[Any]:
    conditions = [column >= since]
    if until is not None:
        conditions.append(column <= until)
    return conditions


def compute_stage_metrics(
    engine: Engine,
    flag: Flag,
    plan: Plan,
    since: datetime,
    until: datetime | None = None,
) -> StageMetrics:
    """Return the :class:`StageMetrics` of ``flag``'s enforced cohort between ``since`` and ``until``.

    ``since`` and ``until`` are aware datetimes (``until`` None means now).
    The values of the plan's ``sql`` gates go into ``custom``, keyed by query.
    """
    with engine.connect() as connection:
        cohort = _cohort_counts(connection, flag, since, until)
        complaints = _complaints(connection, flag, since, until)
        errors = _errors(connection, flag, since, until)

    custom: dict[str, float] = {}
    for gate in plan.gates:
        if gate.metric == "sql" and gate.query:
            value = run_sql_gate(engine, gate.query, flag.name, since, until)
            if value is not None:
                custom[gate.query] = value

    return StageMetrics(
        decisions=cohort["decisions"],
        blocked=cohort["blocked"],
        actors=cohort["actors"],
        blocked_actors=cohort["blocked_actors"],
        legitimate_actors=cohort["legitimate_actors"],
        legitimate_blocked_actors=cohort["legitimate_blocked_actors"],
        complaints=complaints,
        errors=errors,
        custom=custom,
    )


def _cohort_counts(connection: Connection, flag: Flag, since: datetime, until: datetime | None) -> dict[str, int]:
    audits = schema.rate_limit_audits
    trust = schema.trust_profiles
    appeals = schema.appeals
    tier = audits.c.context["tier"].as_string()

    per_actor = (
        sa.select(
            audits.c.actor_type,
            audits.c.actor_id,
            sa.func.count().label("decisions"),
            sa.func.sum(sa.case((audits.c.allowed == sa.false(), 1), else_=0)).label("blocked"),
            sa.func.max(sa.case((tier == LEGITIMATE_TIER, 1), else_=0)).label("seen_legitimate_tier"),
            sa.func.max(sa.case((tier == ABUSER_TIER, 1), else_=0)).label("seen_abuser_tier"),
        )
        .where(*_window(audits.c.created_at, since, until), _governed(audits.c.action, flag))
        .group_by(audits.c.actor_type, audits.c.actor_id)
        .subquery("per_actor")
    )
    upheld = (
        sa.select(appeals.c.actor_type, appeals.c.actor_id)
        .where(appeals.c.status == "upheld")
        .distinct()
        .subquery("upheld")
    )

    profile_tier = sa.func.coalesce(trust.c.risk_tier, "")
    profile_level = sa.func.coalesce(trust.c.enforcement_level, "")
    is_abuser = sa.or_(
        profile_level.in_(ABUSER_LEVELS),
        profile_tier == ABUSER_TIER,
        per_actor.c.seen_abuser_tier == 1,
    )
    is_legitimate = sa.and_(
        sa.not_(is_abuser),
        sa.or_(
            profile_tier == LEGITIMATE_TIER,
            per_actor.c.seen_legitimate_tier == 1,
            upheld.c.actor_id.is_not(None),
        ),
    )
    was_blocked = per_actor.c.blocked > 0

    def count_where(condition: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    query = (
        sa.select(
            sa.func.coalesce(sa.func.sum(per_actor.c.decisions), 0).label("decisions"),
            sa.func.coalesce(sa.func.sum(per_actor.c.blocked), 0).label("blocked"),
            sa.func.count().label("actors"),
            count_where(was_blocked).label("blocked_actors"),
            count_where(sa.not_(is_abuser)).label("legitimate_actors"),
            count_where(sa.and_(is_legitimate, was_blocked)).label("legitimate_blocked_actors"),
        )
        .select_from(
            per_actor.outerjoin(
                trust,
                sa.and_(trust.c.actor_type == per_actor.c.actor_type, trust.c.actor_id == per_actor.c.actor_id),
            ).outerjoin(
                upheld,
                sa.and_(upheld.c.actor_type == per_actor.c.actor_type, upheld.c.actor_id == per_actor.c.actor_id),
            )
        )
    )
    row = connection.execute(query).one()
    return {key: int(value or 0) for key, value in row._mapping.items()}


def _complaints(connection: Connection, flag: Flag, since: datetime, until: datetime | None) -> int:
    appeals = schema.appeals
    query = sa.select(sa.func.count()).where(
        *_window(appeals.c.created_at, since, until), _governed(appeals.c.action, flag)
    )
    return int(connection.execute(query).scalar_one())


def _errors(connection: Connection, flag: Flag, since: datetime, until: datetime | None) -> int:
    stats = schema.rate_limit_decision_stats
    audits = schema.rate_limit_audits

    # NOTE: fail-open decisions are counted per minute, and a minute that began
    # before the stage may hold decisions made before it, at another
    # percentage. Only minutes that begin at or after the stage start count, so
    # fail-open decisions in the stage's first, partial minute are not seen.
    minute_conditions = [stats.c.minute >= since]
    if until is not None:
        minute_conditions.append(stats.c.minute <= until)
    fail_open = sa.select(sa.func.coalesce(sa.func.sum(stats.c.decisions), 0)).where(
        stats.c.mode == "fail_open",
        stats.c.in_cohort == sa.true(),
        _governed(stats.c.action, flag),
        *minute_conditions,
    )
    closed_failures = sa.select(sa.func.count()).where(
        audits.c.allowed == sa.false(),
        audits.c.context["reason"].as_string() == "store_error",
        _governed(audits.c.action, flag),
        *_window(audits.c.created_at, since, until),
    )
    return int(connection.execute(fail_open).scalar_one()) + int(connection.execute(closed_failures).scalar_one())


def run_sql_gate(
    engine: Engine, query: str, flag_name: str, since: datetime, until: datetime | None = None
) -> float | None:
    """Run a custom gate's query read-only and return its first value as a number.

    The query may use the bind parameters ``:since``, ``:until`` (the window,
    as timestamps) and ``:flag``. On PostgreSQL it runs in a read-only
    transaction with a statement timeout of 5 s; on SQLite with
    ``query_only`` on. Returns None (the gate stays pending, so the stage is
    never promoted on it) when the query fails or returns no number; the
    failure is logged.
    """
    statement = sa.text(query)
    available: dict[str, Any] = {"since": since, "until": until or datetime.now(since.tzinfo), "flag": flag_name}
    parameters = {name: value for name, value in available.items() if name in statement.compile().params}

    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                with connection.begin():
                    connection.exec_driver_sql("set transaction read only")
                    connection.exec_driver_sql(f"set local statement_timeout = {SQL_GATE_TIMEOUT_MS}")
                    value = connection.execute(statement, parameters).scalar()
            else:
                connection.exec_driver_sql("pragma query_only = on")
                try:
                    value = connection.execute(statement, parameters).scalar()
                    connection.rollback()
                finally:
                    connection.exec_driver_sql("pragma query_only = off")
    except sa.exc.SQLAlchemyError as error:
        logger.warning(
            "rollout.sql_gate_failed",
            extra={"flag": flag_name, "query": query[:200], "error": str(error).splitlines()[0]},
        )
        return None

    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        logger.warning(
            "rollout.sql_gate_not_a_number", extra={"flag": flag_name, "query": query[:200], "value": repr(value)[:80]}
        )
        return None
