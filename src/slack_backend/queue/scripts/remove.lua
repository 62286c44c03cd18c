-- remove: delete a job that is not running (waiting, delayed, completed or failed).
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] job id  ARGV[2] max events
-- Returns: {code}; code 0 ok | -1 job not found | -3 job is active (finish or wait for it first)
-- Events: removed
-- An operator's remove also forgets the id for de-duplication: adding it again is then deliberate.
--@include _common.lua
local id = ARGV[1]
local rec = load_rec(k, id)
if not rec then return {-1} end
if rec.state == 'active' then return {-3} end
if rec.state == 'waiting' then
  pull_wait(k, rec)
else
  rcall('ZREM', k.delayed, id)
  rcall('ZREM', k.completed, id)
  rcall('ZREM', k.failed, id)
end
delete_job(k, id)
rcall('ZREM', k.dedup, id)
emit(k, ARGV[2], 'removed', id)
return {0}
