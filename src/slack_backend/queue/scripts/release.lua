-- release: give an active job back without spending an attempt, now (shutdown) or after a delay (Retry-After).
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] job id  ARGV[2] lease token  ARGV[3] delay ms (0 = back to waiting at its old place)
-- ARGV[4] hold the whole queue until then (1|0)  ARGV[5] reason  ARGV[6] max events
-- ARGV[7] hold to count against the job's bound, ms (0 = a shutdown release: not counted)
-- ARGV[8] the bound on a job's counted holds, ms (0 = none)
-- Returns: {code}; code 0 ok | -1 job not found | -2 lease lost | -6 over the hold bound (nothing changed: the
--   caller still holds the lease and fails the job)
-- Events: released (with delay_ms, hold)
--@include _common.lua
local id, token = ARGV[1], ARGV[2]
local rec = load_rec(k, id)
if not rec then return {-1} end
if finished_run(rec, token, 'release') then return {0} end -- re-sent after a lost reply: already released
if lease_of(rec) ~= token then return {-2} end
local counted, bound = tonumber(ARGV[7] or '0'), tonumber(ARGV[8] or '0')
if counted > 0 then
  local held = (rec.held_ms or 0) + counted
  if bound > 0 and held > bound then return {-6} end
  rec.held_ms = held
end
local now = now_ms()
local cfg = load_config(k)
leave_active(k, cfg, rec, id)
-- A released run spent nothing of the budget (an upstream 429, or a shutdown before the call finished).
budget_settle(k, rec, nil)
remember_run(rec, token, rec.attempts_made, 0, 'release')
local delay = tonumber(ARGV[3])
if delay > 0 then
  rec.state = 'delayed'
  rec.due_ms = now + delay
  rcall('ZADD', k.delayed, rec.due_ms, id)
  if ARGV[4] == '1' then
    local held = tonumber(rcall('HGET', k.meta, 'hold_until_ms') or '0')
    if now + delay > held then rcall('HSET', k.meta, 'hold_until_ms', now + delay) end
  end
else
  push_wait(k, cfg, rec)
end
save_rec(k, rec)
emit(k, ARGV[6], 'released', id, 'delay_ms', delay, 'hold', ARGV[4], 'reason', ARGV[5])
wake(k, 1)
return {0}
