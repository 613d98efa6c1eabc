"""Count changes to the cached SQLite tables, so the catalog watcher reloads only for them.

The watcher of a SQLite catalog polls ``PRAGMA data_version``, which moves
whenever another connection commits anything, audit rows included. In a
serving process the audit writer commits every few milliseconds, so each
poll reloaded the whole snapshot. Triggers on the cached tables now add one
to ``rampgate_catalog_version.version`` on every insert, update and delete,
and the watcher reloads when that number moves.

PostgreSQL catalogs get nothing: their triggers notify the watcher directly.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The tables of the catalog snapshot: the ones PostgreSQL notifies about.
CACHED_TABLES = ("feature_flags", "rate_limit_configs", "trust_profiles", "appeals", "rollouts")
CHANGES = ("insert", "update", "delete")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "create table rampgate_catalog_version ("
        "id integer primary key check (id = 1), version integer not null)"
    )
    op.execute("insert into rampgate_catalog_version (id, version) values (1, 0)")
    for table in CACHED_TABLES:
        for change in CHANGES:
            op.execute(
                f"create trigger {table}_{change}_version after {change} on {table} begin "
                "update rampgate_catalog_version set version = version + 1 where id = 1; end"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in CACHED_TABLES:
        for change in CHANGES:
            op.execute(f"drop trigger if exists {table}_{change}_version")
    op.execute("drop table if exists rampgate_catalog_version")
