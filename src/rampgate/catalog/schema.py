"""Table definitions for SQLAlchemy Core queries.

The migrations under ``migrations/versions`` create these tables; this module
describes their current shape for the code that reads and writes them.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)

feature_flags = sa.Table(
    "feature_flags",
    metadata,
    sa.Column("flag_name", sa.Text, primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("rollout_percentage", sa.Integer, nullable=False),
    sa.Column("config", JSONType, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

rate_limit_configs = sa.Table(
    "rate_limit_configs",
    metadata,
    sa.Column("config_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("tier", sa.Text),
    sa.Column("actor_type", sa.Text),
    sa.Column("actor_id", sa.Text),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("algorithm", sa.Text, nullable=False),
    sa.Column("limit_value", sa.Integer, nullable=False),
    sa.Column("window_seconds", sa.Integer, nullable=False),
    sa.Column("burst", sa.Integer),
    sa.Column("cost_per_action", sa.Integer, nullable=False),
    sa.Column("fail_mode", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

trust_profiles = sa.Table(
    "trust_profiles",
    metadata,
    sa.Column("actor_type", sa.Text, primary_key=True),
    sa.Column("actor_id", sa.Text, primary_key=True),
    sa.Column("trust_score", sa.Numeric(5, 2)),
    sa.Column("risk_tier", sa.Text, nullable=False),
    sa.Column("enforcement_level", sa.Text, nullable=False),
    sa.Column("signals", JSONType, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

rate_limit_audits = sa.Table(
    "rate_limit_audits",
    metadata,
    sa.Column("audit_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("actor_type", sa.Text, nullable=False),
    sa.Column("actor_id", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("allowed", sa.Boolean, nullable=False),
    sa.Column("tokens_available", sa.Integer),
    sa.Column("tokens_consumed", sa.Integer),
    sa.Column("request_id", sa.Text),
    sa.Column("context", JSONType),
    sa.Column("created_at", Timestamp, nullable=False),
)

rate_limit_decision_stats = sa.Table(
    "rate_limit_decision_stats",
    metadata,
    sa.Column("minute", Timestamp, primary_key=True),
    sa.Column("action", sa.Text, primary_key=True),
    sa.Column("tier", sa.Text, primary_key=True),
    sa.Column("mode", sa.Text, primary_key=True),
    sa.Column("in_cohort", sa.Boolean, primary_key=True),
    sa.Column("reason", sa.Text, primary_key=True),
    sa.Column("decisions", sa.BigInteger, nullable=False),
    sa.Column("would_block", sa.BigInteger, nullable=False),
)

appeals = sa.Table(
    "appeals",
    metadata,
    sa.Column("appeal_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("actor_type", sa.Text, nullable=False),
    sa.Column("actor_id", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("request_id", sa.Text),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("resolved_at", Timestamp),
    sa.Column("resolved_by", sa.Text),
    sa.Column("resolution_note", sa.Text),
    # One open appeal per actor and action (migration 0005).
    sa.Index(
        "appeals_one_open", "actor_type", "actor_id", "action", unique=True,
        postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"),
    ),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("rollout_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("flag_name", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("stage", sa.Integer, nullable=False),
    sa.Column("plan", JSONType, nullable=False),
    sa.Column("stage_started_at", Timestamp),
    sa.Column("baked_seconds", sa.Float, nullable=False),
    sa.Column("failed_gate", JSONType),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
)

rollout_transitions = sa.Table(
    "rollout_transitions",
    metadata,
    sa.Column("transition_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("rollout_id", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("event", sa.Text, nullable=False),
    sa.Column("stage", sa.Integer, nullable=False),
    sa.Column("percentage", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("details", JSONType),
)

controller_leases = sa.Table(
    "controller_leases",
    metadata,
    sa.Column("flag_name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False),
)

config_changes = sa.Table(
    "config_changes",
    metadata,
    sa.Column("change_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("changed_by", sa.Text, nullable=False),
    sa.Column("via", sa.Text, nullable=False),
    sa.Column("entity", sa.Text, nullable=False),
    sa.Column("entity_key", sa.Text, nullable=False),
    sa.Column("before", JSONType),
    sa.Column("after", JSONType),
)
