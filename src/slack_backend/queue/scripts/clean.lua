-- clean: delete up to N jobs of one state that are older than a cutoff (finish time, due time, or creation).
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] state (completed | failed | delayed | waiting)  ARGV[2] cutoff ms (older than this goes)
-- ARGV[3] most jobs to delete in this call
-- Returns: the number deleted (call again until it returns less than asked)
-- Events: none (a bulk operator action)
--@include _common.lua
local state, cutoff, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = 0
if state == 'completed' or state == 'failed' then
  local set = k[state]
  local ids = rcall('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do delete_job(k, id) end
  if #ids > 0 then rcall('ZREM', set, unpack(ids)) end
  n = #ids
elseif state == 'delayed' then
  -- Delayed jobs are ordered by due time; creation time decides what is old.
  local ids = rcall('ZRANGE', k.delayed, 0, -1)
  for _, id in ipairs(ids) do
    if n >= limit then break end
    local rec = load_rec(k, id)
    if not rec or rec.created_ms <= cutoff then
      rcall('ZREM', k.delayed, id)
      delete_job(k, id)
      n = n + 1
    end
  end
elseif state == 'waiting' then
  local members = rcall('ZRANGE', k.wait, 0, -1)
  for _, m in ipairs(members) do
    if n >= limit then break end
    local _, id = split_member(m)
    local rec = load_rec(k, id)
    if not rec then
      rcall('ZREM', k.wait, m)
    elseif rec.created_ms <= cutoff then
      pull_wait(k, rec)
      delete_job(k, id)
      n = n + 1
    end
  end
end
return n
