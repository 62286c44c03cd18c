-- stalled: recover jobs whose lease ran out (their worker died or froze): back to waiting, or failed after
-- too many stalls. Any worker may run it; each run is atomic, so a job is recovered once.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] stalls allowed before failing  ARGV[2] keep failed count  ARGV[3] keep failed age ms
-- ARGV[4] max events
-- Returns: flat array {id, outcome ('waiting' | 'failed'), record ('' unless failed), data ('' unless failed), ...};
--   a failed job's record and data let the one worker whose call failed it fire the `failed` hook, exactly once
-- Events: stalled; failed (when over the limit)
--@include _common.lua
local now = now_ms()
local cfg = load_config(k)
local max_stalls = tonumber(ARGV[1])
local expired = rcall('ZRANGEBYSCORE', k.active, '-inf', now, 'LIMIT', 0, 1000)
local out = {}
local woke = false
for _, id in ipairs(expired) do
  local rec = load_rec(k, id)
  if not rec then
    rcall('ZREM', k.active, id)
  else
    if leave_active(k, cfg, rec, id) then woke = true end
    rec.stalls = (rec.stalls or 0) + 1
    emit(k, ARGV[4], 'stalled', id, 'stalls', rec.stalls, 'worker', rec.worker or '')
    if rec.stalls > max_stalls then
      rec.state = 'failed'
      rec.finished_ms = now
      rec.failed_reason = 'job stalled more than ' .. max_stalls .. ' time(s): its worker stopped renewing the lease'
      save_rec(k, rec)
      rcall('ZADD', k.failed, now, id)
      emit(k, ARGV[4], 'failed', id, 'group', rec.group, 'attempts_made', rec.attempts_made,
        'reason', rec.failed_reason)
      trim_finished(k, k.failed, tonumber(ARGV[2]), tonumber(ARGV[3]), now)
      out[#out + 1] = id
      out[#out + 1] = 'failed'
      out[#out + 1] = cjson.encode(rec)
      out[#out + 1] = rcall('HGET', k.data, id) or ''
    else
      if push_wait(k, cfg, rec) then woke = true end
      save_rec(k, rec)
      out[#out + 1] = id
      out[#out + 1] = 'waiting'
      out[#out + 1] = ''
      out[#out + 1] = ''
    end
  end
end
if woke then wake(k, #out / 4) end
return out
