-- acquire: reserve, then confirm, a slot of a sliding-window rate gate (a cross-process call limiter), in order.
-- KEYS[1] the gate's slots: a ZSET of acquisition token -> slot time (ms, Redis clock; reserved ones may lie in
--         the future). The caller names it (a queue's `{prefix:name}:calls`, or a key of its own under one hash
--         tag), so one script serves every gate; it touches no other key.
-- ARGV[1] max slots per window  ARGV[2] how long each holds its slot, ms (window + guard band)
-- ARGV[3] the acquisition's token (unique)  ARGV[4] 'reserve' or 'confirm'
-- ARGV[5] reserve only: the longest wait the caller accepts, ms (-1: any; 0: now or not at all)
-- Returns: {wait_ms}: reserve: the slot is wait_ms from now (0: taken now, go); confirm: 0 to go now, or a wait
--          before confirming again (a caller ahead went late, so the window is full until then).
--          {-1, wait_ms}: reserve only: nothing reserved, the first free slot is wait_ms away, beyond ARGV[5]
-- Events: none
local rcall = redis.call
local key = KEYS[1]
local max = tonumber(ARGV[1])
local hold_ms = tonumber(ARGV[2])
local token = ARGV[3]
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- Slots that freed no longer count.
rcall('ZREMRANGEBYSCORE', key, '-inf', now - hold_ms)

-- The first moment at or after `at` when a window ending there holds fewer than max of the given slots
-- (ascending times): the max-th newest of them must be out of the window.
local function first_room(slots, at)
  local n = #slots
  if n >= max then
    at = math.max(at, tonumber(slots[n - max + 1]) + hold_ms)
  end
  return at
end

local function scores(upto)
  local raw = rcall('ZRANGEBYSCORE', key, '-inf', upto, 'WITHSCORES')
  local out = {}
  for i = 2, #raw, 2 do out[#out + 1] = raw[i] end
  return out
end

local function keep(at)
  rcall('ZADD', key, at, token)
  -- Nothing outlives its window: an idle gate leaves no key behind.
  local ttl = rcall('PTTL', key)
  if ttl < at - now + hold_ms then rcall('PEXPIRE', key, at - now + hold_ms) end
end

if ARGV[4] == 'reserve' then
  -- Behind every slot handed out so far: callers are served in the order they ask, with no race when one frees.
  local all = scores('+inf')
  local at = first_room(all, now)
  if #all > 0 then at = math.max(at, tonumber(all[#all])) end
  local max_wait = tonumber(ARGV[5])
  if max_wait >= 0 and at - now > max_wait then
    return {-1, at - now}
  end
  keep(at)
  return {at - now}
end

-- confirm: the caller is about to call. A caller that woke late moves its slot to now; then no window ending at
-- its slot may hold max others (one ahead that went late may have moved into it), or it waits for room.
rcall('ZREM', key, token)
local at = first_room(scores(now), now)
keep(at)
return {at - now}
