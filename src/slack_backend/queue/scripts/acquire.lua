-- acquire: reserve the next slot of a sliding-window rate gate (a cross-process call limiter), first come first served.
-- KEYS[1] the gate's stamps: a LIST of the last `max` slot times (ms, Redis clock, some maybe in the future),
--         newest first. The caller names it (a queue's `{prefix:name}:calls`, or a key of its own under one hash
--         tag), so one script serves every gate; it touches no other key.
-- ARGV[1] max slots per window  ARGV[2] how long each holds its slot, ms (window + guard band)
-- ARGV[3] the longest wait the caller accepts, ms (-1: any; 0: now or not at all)
-- Returns: {wait_ms} with wait_ms >= 0: a slot is the caller's wait_ms from now (it sleeps that long, then calls);
--          {-1, wait_ms}: nothing reserved, the first free slot is wait_ms away, longer than ARGV[3]
-- Events: none
local rcall = redis.call
local key = KEYS[1]
local max = tonumber(ARGV[1])
local hold_ms = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The slot max places back frees `hold_ms` after it: a new slot goes there, or now if that is past. Slots are
-- handed out in order of asking, so waiters are served first come first served, with no race when one frees.
local at = now
local oldest = rcall('LINDEX', key, max - 1)
if oldest then at = math.max(at, tonumber(oldest) + hold_ms) end
local newest = rcall('LINDEX', key, 0)
if newest then at = math.max(at, tonumber(newest)) end
if max_wait >= 0 and at - now > max_wait then
  return {-1, at - now}
end
rcall('LPUSH', key, at)
rcall('LTRIM', key, 0, max - 1)
-- Nothing outlives its window: an idle gate leaves no key behind.
rcall('PEXPIRE', key, at - now + hold_ms)
return {at - now}
