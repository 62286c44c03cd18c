-- extend: renew the leases a worker holds; report the ones it lost.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] lease length ms, then pairs: job id, lease token
-- Returns: the ids whose lease is no longer this worker's
-- Events: none
--@include _common.lua
local deadline = now_ms() + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if rcall('HGET', k.leases, id) == ARGV[i + 1] then
    rcall('ZADD', k.active, 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
