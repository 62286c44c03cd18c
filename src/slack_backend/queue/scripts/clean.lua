-- clean: delete up to N jobs of one state that are older than a cutoff (finish time, or creation time).
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] state (completed | failed | delayed | waiting)  ARGV[2] cutoff ms (older than this goes)
-- ARGV[3] most jobs to delete in this call  ARGV[4] rank to resume scanning from (delayed / waiting)
-- Returns: {deleted, next rank (-1 = done)}; finished sets are ordered by time, so they need no rank
-- Events: none (a bulk operator action)
--@include _common.lua
local state, cutoff, limit, from = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if state == 'completed' or state == 'failed' then
  local set = k[state]
  local ids = rcall('ZRANGEBYSCORE', set, '-inf', cutoff, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do delete_job(k, id) end
  if #ids > 0 then rcall('ZREM', set, unpack(ids)) end
  if #ids < limit then return {#ids, -1} end
  return {#ids, 0}
end
-- Waiting and delayed sets are not ordered by age: scan a page from `from`, delete the old ones in it.
local set = k.delayed
if state == 'waiting' then set = k.wait end
local page = rcall('ZRANGE', set, from, from + limit - 1)
local n = 0
for _, entry in ipairs(page) do
  local id = entry
  if state == 'waiting' then
    local _
    _, id = split_member(entry)
  end
  local rec = load_rec(k, id)
  if not rec or rec.created_ms <= cutoff then
    if rec and state == 'waiting' then pull_wait(k, rec) else rcall('ZREM', set, entry) end
    delete_job(k, id)
    n = n + 1
  end
end
if #page < limit then return {n, -1} end
-- What was deleted shifted later entries down by n ranks.
return {n, from + #page - n}
