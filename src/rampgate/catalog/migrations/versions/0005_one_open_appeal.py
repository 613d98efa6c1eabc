"""Allow one open appeal per actor and action in the database itself.

Filing an appeal checks for an open one and then inserts, in two
statements. Two filings at the same moment on PostgreSQL could both pass
the check, so an actor could have two open appeals on one action and count
twice in the complaint gate. A partial unique index on the open appeals
makes the second insert fail, and the repository turns that failure into
the same 409 as the check.

If a catalog already holds such duplicates, the upgrade stops and names
them; resolve all but one of each group (``rampgate appeal reject ID``)
and run ``rampgate migrate`` again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "appeals_one_open"


def upgrade() -> None:
    duplicates = op.get_bind().execute(
        sa.text(
            "select actor_type, actor_id, action, count(*) as open_appeals from appeals "
            "where status = 'open' group by actor_type, actor_id, action having count(*) > 1"
        )
    ).fetchall()
    if duplicates:
        groups = ", ".join(f"{row.actor_type}:{row.actor_id} on {row.action} ({row.open_appeals})" for row in duplicates[:10])
        raise RuntimeError(
            f"{len(duplicates)} actors have more than one open appeal on an action: {groups}. "
            "Resolve all but one of each (rampgate appeal reject ID), then run `rampgate migrate` again."
        )

    op.create_index(
        INDEX,
        "appeals",
        ["actor_type", "actor_id", "action"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
        sqlite_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="appeals")
