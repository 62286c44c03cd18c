-- hold: start no job of the queue until a moment (an upstream provider's limit is spent until its reset).
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] hold length ms from now  ARGV[2] max events
-- Returns: {hold_until_ms}; a hold already set further out stays
-- Events: held (with until_ms)
--@include _common.lua
local until_ms = now_ms() + tonumber(ARGV[1])
local held = tonumber(rcall('HGET', k.meta, 'hold_until_ms') or '0')
if until_ms > held then
  rcall('HSET', k.meta, 'hold_until_ms', until_ms)
  emit(k, ARGV[2], 'held', '', 'until_ms', until_ms)
  held = until_ms
end
return {held}
