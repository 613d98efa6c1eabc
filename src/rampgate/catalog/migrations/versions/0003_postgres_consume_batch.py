"""Add rampgate_consume_batch(): several requests on one counter in one call and one transaction.

The PostgreSQL counter store sends the requests that queue up in a process
for one key as one batch, so a burst on one key costs one row lock per
process instead of one lock wait per request. The batch calls
``rampgate_consume`` once per request, in array order, inside one statement:
the first call locks the row and the lock is held until the batch ends, so
no other transaction runs between the requests, and every request gets the
same arithmetic and its own ``clock_timestamp()`` reading as a single call.

SQLite catalogs get nothing: the PostgreSQL counter store needs PostgreSQL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# request_index is the 1-based position of the request in p_units; callers
# order by it, because a set-returning function promises no row order.
CONSUME_BATCH_FUNCTION = """
create or replace function rampgate_consume_batch(
    p_key text,
    p_algorithm text,
    p_limit bigint,
    p_window_seconds bigint,
    p_capacity bigint,
    p_units bigint[],
    p_now_us bigint default null
) returns table (
    request_index integer,
    allowed boolean,
    remaining bigint,
    reset_after_us bigint,
    retry_after_us bigint,
    next_unit_after_us bigint
) language plpgsql as $$
declare
    position_in_batch integer;
begin
    for position_in_batch in 1 .. coalesce(cardinality(p_units), 0) loop
        request_index := position_in_batch;
        select c.allowed, c.remaining, c.reset_after_us, c.retry_after_us, c.next_unit_after_us
          into allowed, remaining, reset_after_us, retry_after_us, next_unit_after_us
          from rampgate_consume(p_key, p_algorithm, p_limit, p_window_seconds, p_capacity,
                                p_units[position_in_batch], p_now_us) c;
        return next;
    end loop;
end
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(CONSUME_BATCH_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("drop function if exists rampgate_consume_batch(text, text, bigint, bigint, bigint, bigint[], bigint)")
