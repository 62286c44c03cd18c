-- retry: an operator sends a failed (or completed) job back to waiting with its attempts reset.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] job id  ARGV[2] max events
-- Returns: {code}; code 0 ok | -1 job not found | -4 job is not failed or completed
-- Events: retried
--@include _common.lua
local id = ARGV[1]
local rec = load_rec(k, id)
if not rec then return {-1} end
local set
if rec.state == 'failed' then set = k.failed elseif rec.state == 'completed' then set = k.completed else return {-4} end
rcall('ZREM', set, id)
rec.attempts_made = 0
rec.stalls = 0
rec.failed_reason = nil
rec.stacktrace = nil
rec.finished_ms = nil
rec.result = nil
local cfg = load_config(k)
push_wait(k, cfg, rec)
save_rec(k, rec)
emit(k, ARGV[2], 'retried', id)
wake(k, 1)
return {0}
