-- At most `limit` units per window [k*w, (k+1)*w) aligned to the Unix epoch.
-- Twin of rampgate.core.algorithms.consume_fixed_window.
--
-- KEYS[1]  the counter: "<window index k> <units counted in window k>"
-- ARGV[1]  limit: units per window
-- ARGV[2]  window in whole seconds
-- ARGV[3]  capacity (unused: a window algorithm counts up to limit)
-- ARGV[4]  units of this request, at most limit
-- ARGV[5]  optional: now in microseconds; Redis TIME when absent (tests only)
--
-- Returns {allowed (1 or 0), remaining, reset_after, retry_after,
-- next_unit_after}: durations in microseconds.

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

local index = math.floor(now / window_us)
local count = 0
local stored = redis.call('GET', KEYS[1])
if stored then
    local stored_index, stored_count = string.match(stored, '^(%d+) (%d+)$')
    stored_index = tonumber(stored_index)
    if stored_index > index then
        -- The clock of this key went backwards: keep counting in the newer window.
        index = stored_index
    end
    if stored_index == index then
        count = tonumber(stored_count)
    end
end
local until_end = math.max((index + 1) * window_us - now, 0)

if count + units <= limit then
    count = count + units
    redis.call('SET', KEYS[1], string.format('%.0f %.0f', index, count), 'PX', math.ceil(until_end / 1000))
    return {1, limit - count, until_end, 0, until_end}
end

local reset_after = 0
if count > 0 then
    reset_after = until_end
end
return {0, math.max(limit - count, 0), reset_after, until_end, until_end}
