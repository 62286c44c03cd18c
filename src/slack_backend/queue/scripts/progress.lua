-- progress: record an active job's progress (any JSON value) and announce it.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] job id  ARGV[2] lease token  ARGV[3] progress (JSON text)  ARGV[4] max events
-- Returns: {code}; code 0 ok | -1 job not found | -2 lease lost
-- Events: progress
--@include _common.lua
local id, token = ARGV[1], ARGV[2]
local rec = load_rec(k, id)
if not rec then return {-1} end
if lease_of(rec) ~= token then return {-2} end
rec.progress = ARGV[3]
save_rec(k, rec)
emit(k, ARGV[4], 'progress', id, 'progress', ARGV[3])
return {0}
