-- pause: stop (1) or resume (0) starts of new jobs across every worker; running jobs go on.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] 1 = pause, 0 = resume  ARGV[2] max events
-- Returns: {0}
-- Events: paused | resumed
--@include _common.lua
if ARGV[1] == '1' then
  rcall('HSET', k.meta, 'paused', '1')
  emit(k, ARGV[2], 'paused', '')
else
  rcall('HDEL', k.meta, 'paused')
  emit(k, ARGV[2], 'resumed', '')
  wake(k, 64)
end
return {0}
