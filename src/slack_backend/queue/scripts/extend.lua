-- extend: renew the leases a worker holds; report the ones it lost.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] lease length ms, then pairs: job id, lease token
-- Returns: the lease tokens no longer this worker's (a token, not an id: two runs of one job may be held here,
--   the old one finishing its hooks while the new one runs)
-- Events: none
--@include _common.lua
local deadline = now_ms() + tonumber(ARGV[1])
local lost, ids, renewed = {}, {}, {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return lost end
local raws = rcall('HMGET', k.jobs, unpack(ids))
for n, id in ipairs(ids) do
  if raws[n] and lease_of(cjson.decode(raws[n])) == ARGV[2 * n + 1] then
    renewed[#renewed + 1] = deadline
    renewed[#renewed + 1] = id
  else
    lost[#lost + 1] = ARGV[2 * n + 1]
  end
end
if #renewed > 0 then rcall('ZADD', k.active, 'XX', unpack(renewed)) end
return lost
