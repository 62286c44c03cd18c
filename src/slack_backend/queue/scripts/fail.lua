-- fail: an active job's run raised; schedule its retry after a backoff, or fail it for good.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] job id  ARGV[2] lease token  ARGV[3] reason  ARGV[4] stack trace
-- ARGV[5] retry delay ms (-1 = final: no retry)  ARGV[6] keep count (-1 = all)  ARGV[7] keep age ms
-- ARGV[8] max events  ARGV[9] stack traces kept per job
-- Returns: {code, attempts_made, final (1|0)}; code 0 ok | -1 job not found | -2 lease lost;
--   re-sent after a lost reply (its run is in the record's `done`), it answers as the first call did
-- Events: retrying (with delay_ms) or failed
--@include _common.lua
local id, token = ARGV[1], ARGV[2]
local rec = load_rec(k, id)
if not rec then return {-1, 0, 0} end
local replay = finished_run(rec, token, 'fail')
if replay then return {0, replay[2], replay[3]} end
if lease_of(rec) ~= token then return {-2, 0, 0} end
local now = now_ms()
local cfg = load_config(k)
local woke = leave_active(k, cfg, rec, id)
local delay = tonumber(ARGV[5])
rec.attempts_made = rec.attempts_made + 1
rec.failed_reason = ARGV[3]
local stacks = rec.stacktrace
if type(stacks) ~= 'table' or stacks[1] == nil then stacks = {} end
if ARGV[4] ~= '' then table.insert(stacks, 1, ARGV[4]) end
while #stacks > tonumber(ARGV[9]) do table.remove(stacks) end
if #stacks > 0 then rec.stacktrace = stacks else rec.stacktrace = nil end
local final = 0
if delay < 0 then final = 1 end
remember_run(rec, token, rec.attempts_made, final, 'fail')
if final == 1 then
  rec.state = 'failed'
  rec.finished_ms = now
  save_rec(k, rec)
  rcall('ZADD', k.failed, now, id)
  emit(k, ARGV[8], 'failed', id, 'group', rec.group, 'attempts_made', rec.attempts_made, 'reason', ARGV[3])
  trim_finished(k, k.failed, tonumber(ARGV[6]), tonumber(ARGV[7]), now)
elseif delay == 0 then
  if push_wait(k, cfg, rec) then woke = true end
  save_rec(k, rec)
  emit(k, ARGV[8], 'retrying', id, 'attempts_made', rec.attempts_made, 'delay_ms', 0, 'reason', ARGV[3])
else
  rec.state = 'delayed'
  rec.due_ms = now + delay
  save_rec(k, rec)
  rcall('ZADD', k.delayed, rec.due_ms, id)
  emit(k, ARGV[8], 'retrying', id, 'attempts_made', rec.attempts_made, 'delay_ms', delay, 'reason', ARGV[3])
  woke = true -- an idle worker must re-read the earliest due time
end
if woke then wake(k, 1) end
return {0, rec.attempts_made, final}
