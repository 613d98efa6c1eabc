"""Create the catalog tables and seed the default flag and tier policies.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)
NOW = sa.text("CURRENT_TIMESTAMP")

SEEDED_ACTIONS = ["create_post", "send_message", "follow", "media_upload", "search", "api_call"]
SEEDED_LIMITS = {
    "create_post": ((50, 60), (20, 60), (5, 60), (1, 3600)),
    "send_message": ((100, 60), (60, 60), (15, 60), (1, 3600)),
    "follow": ((40, 60), (15, 60), (3, 60), (1, 3600)),
    "media_upload": ((20, 60), (5, 60), (1, 60), (1, 3600)),
    "search": ((300, 60), (100, 60), (30, 60), (1, 3600)),
    "api_call": ((500, 60), (200, 60), (50, 60), (2, 3600)),
}

# Statement-level triggers tell every running process that the cache is stale,
# whichever path (API, CLI, plain SQL) changed the row.
NOTIFY_FUNCTION = """
create or replace function rampgate_notify_change() returns trigger language plpgsql as $$
begin
    perform pg_notify('rampgate_catalog', tg_table_name);
    return null;
end
$$;
"""
NOTIFIED_TABLES = ("feature_flags", "rate_limit_configs", "trust_profiles", "appeals", "rollouts")


def upgrade() -> None:
    is_postgres = op.get_bind().dialect.name == "postgresql"

    op.create_table(
        "feature_flags",
        sa.Column("flag_name", sa.Text, primary_key=True),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rollout_percentage", sa.Integer, nullable=False, server_default="0"),
        sa.Column("config", JSONType, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", Timestamp, nullable=False, server_default=NOW),
        sa.Column("updated_at", Timestamp, nullable=False, server_default=NOW),
        sa.CheckConstraint("rollout_percentage between 0 and 100", name="feature_flags_percentage_range"),
    )

    op.create_table(
        "rate_limit_configs",
        sa.Column("config_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("tier", sa.Text),
        sa.Column("actor_type", sa.Text),
        sa.Column("actor_id", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("algorithm", sa.Text, nullable=False, server_default="token_bucket"),
        sa.Column("limit_value", sa.Integer, nullable=False),
        sa.Column("window_seconds", sa.Integer, nullable=False),
        sa.Column("burst", sa.Integer),
        sa.Column("cost_per_action", sa.Integer, nullable=False, server_default="1"),
        sa.Column("fail_mode", sa.Text, nullable=False, server_default="open"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", Timestamp, nullable=False, server_default=NOW),
        sa.Column("updated_at", Timestamp, nullable=False, server_default=NOW),
        sa.CheckConstraint("scope in ('global', 'tier', 'actor')", name="rate_limit_configs_scope"),
        sa.CheckConstraint(
            "algorithm in ('token_bucket', 'fixed_window', 'sliding_window', 'gcra')",
            name="rate_limit_configs_algorithm",
        ),
        sa.CheckConstraint("limit_value > 0", name="rate_limit_configs_limit_positive"),
        sa.CheckConstraint("window_seconds > 0", name="rate_limit_configs_window_positive"),
        sa.CheckConstraint("burst is null or burst >= 1", name="rate_limit_configs_burst_positive"),
        sa.CheckConstraint("cost_per_action >= 1", name="rate_limit_configs_cost_positive"),
        sa.CheckConstraint("fail_mode in ('open', 'closed')", name="rate_limit_configs_fail_mode"),
        sa.CheckConstraint("tier is null or tier in ('A', 'B', 'C', 'D')", name="rate_limit_configs_tier"),
    )
    if is_postgres and op.get_bind().dialect.server_version_info >= (15,):
        op.execute(
            "alter table rate_limit_configs add constraint rate_limit_configs_scope_key "
            "unique nulls not distinct (scope, tier, actor_type, actor_id, action)"
        )
    else:
        op.execute(
            "create unique index rate_limit_configs_scope_key on rate_limit_configs "
            "(scope, coalesce(tier, ''), coalesce(actor_type, ''), coalesce(actor_id, ''), action)"
        )

    op.create_table(
        "trust_profiles",
        sa.Column("actor_type", sa.Text, primary_key=True),
        sa.Column("actor_id", sa.Text, primary_key=True),
        sa.Column("trust_score", sa.Numeric(5, 2)),
        sa.Column("risk_tier", sa.Text, nullable=False, server_default="B"),
        sa.Column("enforcement_level", sa.Text, nullable=False, server_default="E0"),
        sa.Column("signals", JSONType, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("updated_at", Timestamp, nullable=False, server_default=NOW),
        sa.CheckConstraint("trust_score is null or trust_score between 0 and 100", name="trust_profiles_score"),
        sa.CheckConstraint("risk_tier in ('A', 'B', 'C', 'D')", name="trust_profiles_tier"),
        sa.CheckConstraint(
            "enforcement_level in ('E0', 'E1', 'E2', 'E3', 'E4', 'E5')", name="trust_profiles_level"
        ),
    )

    op.create_table(
        "rate_limit_audits",
        sa.Column("audit_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("actor_type", sa.Text, nullable=False),
        sa.Column("actor_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("tokens_available", sa.Integer),
        sa.Column("tokens_consumed", sa.Integer),
        sa.Column("request_id", sa.Text),
        sa.Column("context", JSONType),
        sa.Column("created_at", Timestamp, nullable=False, server_default=NOW),
    )
    op.create_index("rate_limit_audits_created_at", "rate_limit_audits", ["created_at"])
    op.create_index(
        "rate_limit_audits_actor", "rate_limit_audits", ["actor_type", "actor_id", "created_at"]
    )

    op.create_table(
        "rate_limit_decision_stats",
        sa.Column("minute", Timestamp, primary_key=True),
        sa.Column("action", sa.Text, primary_key=True),
        sa.Column("tier", sa.Text, primary_key=True),
        sa.Column("mode", sa.Text, primary_key=True),
        sa.Column("in_cohort", sa.Boolean, primary_key=True),
        sa.Column("reason", sa.Text, primary_key=True),
        sa.Column("decisions", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("would_block", sa.BigInteger, nullable=False, server_default="0"),
    )

    op.create_table(
        "appeals",
        sa.Column("appeal_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("actor_type", sa.Text, nullable=False),
        sa.Column("actor_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="open"),
        sa.Column("created_at", Timestamp, nullable=False, server_default=NOW),
        sa.Column("resolved_at", Timestamp),
        sa.Column("resolved_by", sa.Text),
        sa.Column("resolution_note", sa.Text),
        sa.CheckConstraint("status in ('open', 'upheld', 'rejected')", name="appeals_status"),
    )
    op.create_index("appeals_actor", "appeals", ["actor_type", "actor_id"])

    op.create_table(
        "rollouts",
        sa.Column("rollout_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("flag_name", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("plan", JSONType, nullable=False),
        sa.Column("stage_started_at", Timestamp),
        sa.Column("baked_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("failed_gate", JSONType),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", Timestamp, nullable=False, server_default=NOW),
        sa.Column("updated_at", Timestamp, nullable=False, server_default=NOW),
    )
    op.create_index("rollouts_flag", "rollouts", ["flag_name", "rollout_id"])

    op.create_table(
        "rollout_transitions",
        sa.Column("transition_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("rollout_id", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("stage", sa.Integer, nullable=False),
        sa.Column("percentage", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("details", JSONType),
        sa.UniqueConstraint("rollout_id", "seq", name="rollout_transitions_seq"),
    )

    op.create_table(
        "controller_leases",
        sa.Column("flag_name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
    )

    op.create_table(
        "config_changes",
        sa.Column("change_id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Timestamp, nullable=False, server_default=NOW),
        sa.Column("changed_by", sa.Text, nullable=False),
        sa.Column("via", sa.Text, nullable=False),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("entity_key", sa.Text, nullable=False),
        sa.Column("before", JSONType),
        sa.Column("after", JSONType),
    )
    op.create_index("config_changes_at", "config_changes", ["at"])

    if is_postgres:
        op.execute(NOTIFY_FUNCTION)
        for table in NOTIFIED_TABLES:
            op.execute(
                f"create trigger {table}_notify after insert or update or delete or truncate on {table} "
                "for each statement execute function rampgate_notify_change()"
            )

    _seed()


def _seed() -> None:
    flags = sa.table(
        "feature_flags",
        sa.column("flag_name", sa.Text),
        sa.column("enabled", sa.Boolean),
        sa.column("rollout_percentage", sa.Integer),
        sa.column("config", JSONType),
    )
    op.bulk_insert(
        flags,
        [
            {
                "flag_name": "rate_limit_enforcement",
                "enabled": False,
                "rollout_percentage": 0,
                "config": {"actions": SEEDED_ACTIONS},
            }
        ],
    )

    configs = sa.table(
        "rate_limit_configs",
        sa.column("scope", sa.Text),
        sa.column("tier", sa.Text),
        sa.column("action", sa.Text),
        sa.column("algorithm", sa.Text),
        sa.column("limit_value", sa.Integer),
        sa.column("window_seconds", sa.Integer),
        sa.column("cost_per_action", sa.Integer),
        sa.column("fail_mode", sa.Text),
        sa.column("enabled", sa.Boolean),
    )
    rows = []
    for action, limits in SEEDED_LIMITS.items():
        for tier, (limit, window) in zip("ABCD", limits):
            rows.append(
                {
                    "scope": "tier",
                    "tier": tier,
                    "action": action,
                    "algorithm": "token_bucket",
                    "limit_value": limit,
                    "window_seconds": window,
                    "cost_per_action": 1,
                    "fail_mode": "open",
                    "enabled": True,
                }
            )
    op.bulk_insert(configs, rows)


def downgrade() -> None:
    is_postgres = op.get_bind().dialect.name == "postgresql"
    if is_postgres:
        for table in NOTIFIED_TABLES:
            op.execute(f"drop trigger if exists {table}_notify on {table}")
        op.execute("drop function if exists rampgate_notify_change()")
    for table in (
        "config_changes",
        "controller_leases",
        "rollout_transitions",
        "rollouts",
        "appeals",
        "rate_limit_decision_stats",
        "rate_limit_audits",
        "trust_profiles",
        "rate_limit_configs",
        "feature_flags",
    ):
        op.drop_table(table)
