-- retry: an operator sends failed (or completed) jobs back to waiting with their attempts reset.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] max events, then ARGV[2..] job ids
-- Returns: one code per id; 0 ok | -1 job not found | -4 job is not failed or completed
-- Events: retried (one per job)
--@include _common.lua
local cfg = load_config(k)
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local rec = load_rec(k, id)
  local set = nil
  if rec and rec.state == 'failed' then set = k.failed elseif rec and rec.state == 'completed' then set = k.completed end
  if not rec then
    out[#out + 1] = -1
  elseif not set then
    out[#out + 1] = -4
  else
    rcall('ZREM', set, id)
    rec.attempts_made = 0
    rec.stalls = 0
    rec.failed_reason = nil
    rec.stacktrace = nil
    rec.finished_ms = nil
    rec.result = nil
    push_wait(k, cfg, rec)
    save_rec(k, rec)
    emit(k, ARGV[1], 'retried', id)
    out[#out + 1] = 0
  end
end
if #ARGV > 1 then wake(k, #ARGV - 1) end
return out
