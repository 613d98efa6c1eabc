"""Add the PostgreSQL counter store: the rate_limit_counters table and rampgate_consume().

``rampgate_consume`` is a line-by-line twin of the Redis scripts in
``rampgate/stores/lua`` and of :mod:`rampgate.core.algorithms`. It locks the
counter's row, so concurrent calls on one key run one after the other, and
reads ``clock_timestamp()`` only once it holds the lock, so the calls on a key
see times in the order they run. Time is counted in whole microseconds; the
TAT of token_bucket and gcra keeps a remainder in ticks of 1/limit
microsecond, and numeric arithmetic keeps every step exact.

SQLite catalogs get nothing: the PostgreSQL counter store needs PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# ``state`` by algorithm:
#   token_bucket, gcra: {TAT microseconds, remainder in ticks}
#   fixed_window:       {window index, units counted in that window}
#   sliding_window:     {t0, u0, t1, u1, ...}, admitted requests, oldest first
# ``expires_at`` is when the state becomes the same as a fresh counter; rows
# past it are deleted by rampgate_prune_counters(). No index covers it, so
# updates stay HOT (heap-only tuple) updates.
CREATE_TABLE = """
create table rate_limit_counters (
    counter_key text primary key,
    state bigint[] not null,
    expires_at timestamptz not null
) with (fillfactor = 70)
"""

CONSUME_FUNCTION = """
create or replace function rampgate_consume(
    p_key text,
    p_algorithm text,
    p_limit bigint,
    p_window_seconds bigint,
    p_capacity bigint,
    p_units bigint,
    p_now_us bigint default null,
    out allowed boolean,
    out remaining bigint,
    out reset_after_us bigint,
    out retry_after_us bigint,
    out next_unit_after_us bigint
) language plpgsql as $$
-- Returns durations in microseconds, rounded up; next_unit_after_us is -1
-- when nothing is counted. p_now_us replaces clock_timestamp() in tests only.
declare
    counter bigint[];
    clock numeric;
    now_us numeric;
    window_us numeric := p_window_seconds * 1000000;
    expiry_us numeric;
    debt numeric := 0;
    span numeric;
    new_debt numeric;
    excess numeric;
    level numeric;
    window_index numeric;
    counted numeric := 0;
    until_end numeric;
    size integer;
    oldest integer := 1;
    used numeric := 0;
    needed numeric;
    freed numeric := 0;
    entry integer;
begin
    select c.state into counter from rate_limit_counters c where c.counter_key = p_key for update;
    if not found then
        insert into rate_limit_counters (counter_key, state, expires_at)
        values (p_key, '{}', '-infinity')
        on conflict (counter_key) do nothing;
        select c.state into counter from rate_limit_counters c where c.counter_key = p_key for update;
    end if;

    clock := floor(extract(epoch from clock_timestamp()) * 1000000);
    now_us := coalesce(p_now_us, clock);

    if p_algorithm in ('token_bucket', 'gcra') then
        -- debt = TAT - now in ticks; a TAT in the past counts as now.
        if cardinality(counter) = 2 and counter[1] >= now_us then
            debt := (counter[1] - now_us) * p_limit + counter[2];
        end if;
        span := p_capacity * window_us;
        new_debt := debt + p_units * window_us;
        excess := new_debt - span;

        if excess <= 0 then
            level := span - new_debt;
            allowed := true;
            remaining := div(level, window_us);
            reset_after_us := div(new_debt + p_limit - 1, p_limit);
            retry_after_us := 0;
            next_unit_after_us := div((remaining + 1) * window_us - level + p_limit - 1, p_limit);
            counter := array[now_us + div(new_debt, p_limit), mod(new_debt, p_limit)];
            expiry_us := now_us + reset_after_us;
        else
            level := span - debt;
            allowed := false;
            remaining := greatest(div(level, window_us), 0);
            reset_after_us := div(debt + p_limit - 1, p_limit);
            retry_after_us := div(excess + p_limit - 1, p_limit);
            next_unit_after_us := -1;
            if debt > 0 then
                next_unit_after_us := div((remaining + 1) * window_us - level + p_limit - 1, p_limit);
            end if;
            return;
        end if;

    elsif p_algorithm = 'fixed_window' then
        window_index := div(now_us, window_us);
        if cardinality(counter) = 2 then
            if counter[1] > window_index then
                -- The clock of this key went backwards: keep counting in the newer window.
                window_index := counter[1];
            end if;
            if counter[1] = window_index then
                counted := counter[2];
            end if;
        end if;
        until_end := greatest((window_index + 1) * window_us - now_us, 0);

        if counted + p_units <= p_limit then
            counted := counted + p_units;
            allowed := true;
            remaining := p_limit - counted;
            reset_after_us := until_end;
            retry_after_us := 0;
            next_unit_after_us := until_end;
            counter := array[window_index, counted];
            expiry_us := now_us + until_end;
        else
            allowed := false;
            remaining := greatest(p_limit - counted, 0);
            reset_after_us := case when counted > 0 then until_end else 0 end;
            retry_after_us := until_end;
            next_unit_after_us := until_end;
            return;
        end if;

    elsif p_algorithm = 'sliding_window' then
        size := coalesce(cardinality(counter), 0);
        if size > 0 and counter[size - 1] > now_us then
            now_us := counter[size - 1];
        end if;
        -- Drop the entries that no longer count.
        while oldest <= size and counter[oldest] <= now_us - window_us loop
            oldest := oldest + 2;
        end loop;
        entry := oldest + 1;
        while entry <= size loop
            used := used + counter[entry];
            entry := entry + 2;
        end loop;

        if used + p_units <= p_limit then
            allowed := true;
            remaining := p_limit - used - p_units;
            reset_after_us := window_us;
            retry_after_us := 0;
            if oldest <= size then
                next_unit_after_us := counter[oldest] + window_us - now_us;
            else
                next_unit_after_us := window_us;
            end if;
            counter := counter[oldest:size] || array[now_us, p_units]::bigint[];
            expiry_us := now_us + window_us;
        else
            -- Walk the log from the oldest entry until enough units have expired.
            needed := used + p_units - p_limit;
            retry_after_us := window_us;
            entry := oldest;
            while entry <= size loop
                freed := freed + counter[entry + 1];
                if freed >= needed then
                    retry_after_us := counter[entry] + window_us - now_us;
                    exit;
                end if;
                entry := entry + 2;
            end loop;
            allowed := false;
            remaining := greatest(p_limit - used, 0);
            reset_after_us := 0;
            next_unit_after_us := -1;
            if oldest <= size then
                reset_after_us := counter[size - 1] + window_us - now_us;
                next_unit_after_us := counter[oldest] + window_us - now_us;
            end if;
            if oldest > 1 then
                update rate_limit_counters c set state = c.state[oldest:size] where c.counter_key = p_key;
            end if;
            return;
        end if;

    else
        raise exception 'invalid algorithm %: expected token_bucket, gcra, fixed_window or sliding_window',
            p_algorithm using errcode = '22023';
    end if;

    -- Expiry is measured from the clock, like Redis's PX.
    update rate_limit_counters c
       set state = counter,
           expires_at = clock_timestamp() + (expiry_us - clock) * interval '1 microsecond'
     where c.counter_key = p_key;
end
$$;
"""

PRUNE_FUNCTION = """
create or replace function rampgate_prune_counters(p_batch integer default 10000) returns integer
language sql as $$
    -- Delete up to p_batch expired counters, skipping rows that a decision holds.
    with pruned as (
        delete from rate_limit_counters
         where ctid in (select ctid from rate_limit_counters
                         where expires_at < clock_timestamp()
                         limit p_batch
                           for update skip locked)
        returning 1
    )
    select count(*)::integer from pruned
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(CREATE_TABLE)
    op.execute(CONSUME_FUNCTION)
    op.execute(PRUNE_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("drop function if exists rampgate_prune_counters(integer)")
    op.execute("drop function if exists rampgate_consume(text, text, bigint, bigint, bigint, bigint, bigint)")
    op.execute("drop table if exists rate_limit_counters")
