-- drain: delete up to N waiting jobs (and delayed ones when asked); running jobs are left alone.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] most jobs to delete in this call  ARGV[2] include delayed (1|0)
-- Returns: the number deleted (call again until it returns 0)
-- Events: none (a bulk operator action)
--@include _common.lua
local limit = tonumber(ARGV[1])
local members = rcall('ZRANGE', k.wait, 0, limit - 1)
for _, m in ipairs(members) do
  local group, id = split_member(m)
  delete_job(k, id)
  local left = rcall('HINCRBY', k.group_waiting, group, -1)
  if left <= 0 then
    rcall('HDEL', k.group_waiting, group)
    rcall('ZREM', k.groups, group)
    rcall('ZREM', k.groups_limited, group)
  end
end
if #members > 0 then rcall('ZREM', k.wait, unpack(members)) end
local n = #members
if ARGV[2] == '1' and n < limit then
  local ids = rcall('ZRANGE', k.delayed, 0, limit - n - 1)
  for _, id in ipairs(ids) do delete_job(k, id) end
  if #ids > 0 then rcall('ZREM', k.delayed, unpack(ids)) end
  n = n + #ids
end
return n
