-- configure: set the queue's limits (shared by every worker) and, optionally, one group's own settings.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] queue config JSON ('' = leave as is)  ARGV[2] group name ('' = none)
-- ARGV[3] group settings JSON ('' = delete the group's overrides)
-- Every call also records how many groups have settings of their own (meta group_conf_n), so the hot
-- path skips the per-group lookup while there are none; a worker calls this once at start.
-- Returns: {0}
-- Events: none; wakes workers, since a raised limit may let jobs start now.
--@include _common.lua
if ARGV[1] ~= '' then rcall('HSET', k.meta, 'config', ARGV[1]) end
if ARGV[2] ~= '' then
  if ARGV[3] == '' then
    rcall('HDEL', k.group_conf, ARGV[2])
  else
    rcall('HSET', k.group_conf, ARGV[2], ARGV[3])
  end
end
rcall('HSET', k.meta, 'group_conf_n', rcall('HLEN', k.group_conf))
if ARGV[2] ~= '' then make_ready(k, load_config(k), ARGV[2]) end
wake(k, 64)
return {0}
