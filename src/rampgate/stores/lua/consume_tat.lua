-- Token bucket and GCRA: admit the request's units when the bucket holds them.
-- Twin of rampgate.core.algorithms.consume_tat.
--
-- KEYS[1]  the counter. Its value is the theoretical arrival time (TAT), the
--          moment the bucket is full again, as "<microseconds> <remainder>".
--          The remainder counts ticks of 1/limit microsecond, so the TAT is
--          exact although window / limit rarely divides evenly.
-- ARGV[1]  limit: units per window
-- ARGV[2]  window in whole seconds
-- ARGV[3]  capacity C (burst, or limit)
-- ARGV[4]  units of this request, at most C
-- ARGV[5]  optional: now in microseconds; Redis TIME when absent (tests only)
--
-- Returns {allowed (1 or 0), remaining, reset_after, retry_after,
-- next_unit_after}: durations in microseconds rounded up, next_unit_after -1
-- when the bucket is full.
--
-- Units: time in microseconds (TIME) and in ticks. The emission interval
-- T = window / limit is exactly window_us ticks, and the bucket spans C * T.
-- NOTE: the arithmetic is exact while capacity * window_us stays below 2^53
-- (9e15, for example a capacity of 1e6 per day); beyond that Lua's doubles
-- round it to about 1e-16 of its value.

local limit = tonumber(ARGV[1])
local window_us = tonumber(ARGV[2]) * 1000000
local capacity = tonumber(ARGV[3])
local units = tonumber(ARGV[4])

local now
if ARGV[5] then
    now = tonumber(ARGV[5])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local function ticks_to_us(ticks)
    return math.floor((ticks + limit - 1) / limit)
end

-- debt = TAT - now in ticks. A TAT in the past counts as now, so the stored
-- TAT never moves backwards even if the clock does.
local debt = 0
local stored = redis.call('GET', KEYS[1])
if stored then
    local tat_us, tat_rem = string.match(stored, '^(%d+) (%d+)$')
    tat_us = tonumber(tat_us)
    tat_rem = tonumber(tat_rem)
    if tat_us >= now then
        debt = (tat_us - now) * limit + tat_rem
    end
end

local span = capacity * window_us
local new_debt = debt + units * window_us
local excess = new_debt - span

if excess <= 0 then
    local level = span - new_debt
    local remaining = math.floor(level / window_us)
    local next_unit_after = (remaining + 1) * window_us - level

    local tat_us = now + math.floor(new_debt / limit)
    local tat_rem = new_debt % limit
    local expire_ms = math.ceil(ticks_to_us(new_debt) / 1000)
    redis.call('SET', KEYS[1], string.format('%.0f %.0f', tat_us, tat_rem), 'PX', expire_ms)
    return {1, remaining, ticks_to_us(new_debt), 0, ticks_to_us(next_unit_after)}
end

local level = span - debt
local remaining = math.max(math.floor(level / window_us), 0)
local next_unit_after = -1
if debt > 0 then
    next_unit_after = ticks_to_us((remaining + 1) * window_us - level)
end
return {0, remaining, ticks_to_us(debt), ticks_to_us(excess), next_unit_after}
