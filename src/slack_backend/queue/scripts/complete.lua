-- complete: an active job finished; keep its result and trim the completed set in the same step.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] job id  ARGV[2] lease token  ARGV[3] result (JSON text)
-- ARGV[4] keep count (-1 = all)  ARGV[5] keep age ms (0 = no age limit)  ARGV[6] max events
-- ARGV[7] tokens the run really used (-1 = unknown: its budget reservation stands)
-- Returns: {code, finished_ms}; code 0 ok | -1 job not found | -2 lease lost
-- Events: completed (with wait_ms: enqueue to first start, run_ms: this run)
--@include _common.lua
local id, token = ARGV[1], ARGV[2]
local rec = load_rec(k, id)
if not rec then return {-1, 0} end
if rcall('HGET', k.leases, id) ~= token then return {-2, 0} end
local now = now_ms()
local cfg = load_config(k)
local woke = leave_active(k, cfg, rec, id)
local used = tonumber(ARGV[7] or '-1')
if used >= 0 then
  budget_settle(k, rec, used)
  rec.cost_used = used
end
rec.state = 'completed'
rec.finished_ms = now
rec.attempts_made = rec.attempts_made + 1
rec.result = ARGV[3]
save_rec(k, rec)
rcall('ZADD', k.completed, now, id)
emit(k, ARGV[6], 'completed', id, 'group', rec.group, 'attempts_made', rec.attempts_made,
  'wait_ms', (rec.first_processed_ms or now) - rec.created_ms, 'run_ms', now - (rec.processed_ms or now))
trim_finished(k, k.completed, tonumber(ARGV[4]), tonumber(ARGV[5]), now)
if woke then wake(k, 1) end
return {0, now}
