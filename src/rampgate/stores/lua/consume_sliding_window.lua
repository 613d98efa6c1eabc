-- At most `limit` units within any half-open interval of `window` seconds.
-- Twin of rampgate.core.algorithms.consume_sliding_window.
--
-- KEYS[1]  the counter: a list "t0, u0, t1, u1, ..." of admitted requests,
--          oldest first (t in microseconds, u in units). An entry admitted
--          at t stops counting at t + window.
-- ARGV[1]  limit: units per window
-- ARGV[2]  window in whole seconds
-- ARGV[3]  capacity (unused: a window algorithm counts up to limit)
-- ARGV[4]  units of this request, at most limit
-- ARGV[5]  optional: now in microseconds; Redis TIME when absent (tests only)
--
-- Returns {allowed (1 or 0), remaining, reset_after, retry_after,
-- next_unit_after}: durations in microseconds, next_unit_after -1 when the
-- log is empty.
-- NOTE: each call reads the whole log, at most `limit` entries, as the Python
-- twin does.

local limit = tonumber(ARGV[1])
local window_us = tonumber(ARGV[2]) * 1000000
local units = tonumber(ARGV[4])

local now
if ARGV[5] then
    now = tonumber(ARGV[5])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- `now` may move forward to the newest entry below; `clock` keeps the time
-- that key expiry is measured from.
local clock = now
local log = redis.call('LRANGE', KEYS[1], 0, -1)
local size = #log
if size > 0 then
    local newest = tonumber(log[size - 1])
    if newest > now then
        now = newest
    end
end

-- Drop the entries that no longer count.
local cutoff = now - window_us
local first = 1
while first <= size and tonumber(log[first]) <= cutoff do
    first = first + 2
end
if first > 1 then
    redis.call('LTRIM', KEYS[1], first - 1, -1)
end

local used = 0
for position = first + 1, size, 2 do
    used = used + tonumber(log[position])
end

if used + units <= limit then
    redis.call('RPUSH', KEYS[1], string.format('%.0f', now), units)
    redis.call('PEXPIRE', KEYS[1], math.ceil((now + window_us - clock) / 1000))
    local oldest = now
    if first <= size then
        oldest = tonumber(log[first])
    end
    return {1, limit - used - units, window_us, 0, oldest + window_us - now}
end

-- Walk the log from the oldest entry until enough units have expired.
local needed = used + units - limit
local freed = 0
local retry_after = window_us
for position = first, size, 2 do
    freed = freed + tonumber(log[position + 1])
    if freed >= needed then
        retry_after = tonumber(log[position]) + window_us - now
        break
    end
end

local reset_after = 0
local next_unit_after = -1
if first <= size then
    reset_after = tonumber(log[size - 1]) + window_us - now
    next_unit_after = tonumber(log[first]) + window_us - now
end
return {0, math.max(limit - used, 0), reset_after, retry_after, next_unit_after}
