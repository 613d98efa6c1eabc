-- Token bucket and GCRA: admit the request's units when the bucket holds them.
-- Twin of rampgate.core.algorithms.consume_tat.
--
-- KEYS[1]  the counter. Its value is the theoretical arrival time (TAT), the
--          moment the bucket is full again, as "<microseconds> <remainder>".
--          The remainder counts ticks of 1/limit microsecond, so the TAT is
--          exact although window / limit rarely divides evenly. A value of
--          "<microseconds>" alone (remainder 0) is read as well.
-- ARGV[1]  limit: units per window
-- ARGV[2]  window in whole seconds
-- ARGV[3]  capacity C (burst, or limit)
-- ARGV[4]  units of this request, at most C
-- ARGV[5]  optional: now in microseconds; Redis TIME when absent (tests only)
--
-- Returns one integer: the debt in ticks after the request when it is
-- admitted (at least 1), or -1 - debt when it is blocked and the key is left
-- as it was. The caller knows the policy's numbers, so it derives remaining,
-- reset_after, retry_after and next_unit_after from the debt
-- (rampgate.stores.redis.tat_outcome), which keeps the script short.
--
-- Units: time in microseconds (TIME) and in ticks. The emission interval
-- T = window / limit is exactly window_us ticks, and the bucket spans C * T.
-- NOTE: the arithmetic is exact while capacity * window_us stays below 2^53
-- (9e15, for example a capacity of 1e6 per day); beyond that Lua's doubles
-- round it to about 1e-16 of its value.
--
-- NOTE: the key is written as "<microseconds> <remainder>" even when the
-- remainder is 0, because earlier releases read only that form, and processes
-- of two releases share the keys during a rolling upgrade. Writing the bare
-- integer would save about 0.4 µs of server time per call (Redis 7.0).

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

-- debt = TAT - now in ticks. A TAT in the past counts as now, so the stored
-- TAT never moves backwards even if the clock does.
local debt = 0
local stored = redis.call('GET', KEYS[1])
if stored then
    local tat_us, tat_rem = string.match(stored, '^(%d+) (%d+)$')
    if tat_us then
        tat_us = tonumber(tat_us)
        tat_rem = tonumber(tat_rem)
    else
        tat_us = tonumber(stored)
        tat_rem = 0
    end
    if tat_us >= now then
        debt = (tat_us - now) * limit + tat_rem
    end
end

local new_debt = debt + units * window_us
if new_debt > capacity * window_us then
    return -1 - debt
end

-- new_debt - tat_rem is a multiple of limit, so tat_us is a whole number.
local tat_rem = new_debt % limit
local tat_us = now + (new_debt - tat_rem) / limit
local expire_ms = math.ceil(new_debt / (limit * 1000))
redis.call('SET', KEYS[1], string.format('%.0f %.0f', tat_us, tat_rem), 'PX', expire_ms)
return new_debt
