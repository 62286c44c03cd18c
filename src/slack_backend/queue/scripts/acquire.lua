-- acquire: take one slot of a sliding-window rate gate if the window has room (a cross-process call limiter).
-- KEYS[1] the gate's stamps: a LIST of the last `max` acquisition times (ms, Redis clock), newest first.
--         The caller names it (a queue's `{prefix:name}:calls`, or a key of its own under one hash tag),
--         so one script serves every gate; it touches no other key.
-- ARGV[1] max acquisitions per window  ARGV[2] how long each holds its slot, ms (window + guard band)
-- Returns: {1, now_ms} when a slot was taken; {0, wait_ms} when the window is full: the ms until its oldest
--          slot frees (at least 1)
-- Events: none
local rcall = redis.call
local key = KEYS[1]
local max = tonumber(ARGV[1])
local hold_ms = tonumber(ARGV[2])
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The max-th newest stamp decides: while it is inside the window, max slots are held.
local oldest = rcall('LINDEX', key, max - 1)
if oldest and tonumber(oldest) > now - hold_ms then
  return {0, math.max(1, tonumber(oldest) + hold_ms - now)}
end
rcall('LPUSH', key, now)
rcall('LTRIM', key, 0, max - 1)
-- Nothing outlives its window: an idle gate leaves no key behind.
rcall('PEXPIRE', key, hold_ms)
return {1, now}
