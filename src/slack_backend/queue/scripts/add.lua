-- add: put new jobs in the queue (waiting, or delayed when a delay is given); idempotent by job id.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] to ARGV[8] the first job, ARGV[9] to ARGV[16] the next, and so on; per job, eight fields:
--   id ('' = the queue numbers it), name, data (JSON text, stored as is), group, priority, delay ms,
--   cost (tokens, 0 = none), options (JSON: attempts, backoff)
-- Returns: flat array {id, created (1 new | 0 already there), ...}
-- Events: none per job (the stream carries finishes); wakes idle workers.
-- Fields travel as plain arguments, not as one JSON document: the data is encoded once, by the client.
--@include _common.lua
local now = now_ms()
local cfg = lazy_config(k)
local out = {}
local added = 0
for base = 0, #ARGV - 8, 8 do
  local id = ARGV[base + 1]
  if id ~= '' and rcall('HEXISTS', k.jobs, id) == 1 then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local seq = rcall('HINCRBY', k.meta, 'seq', 1)
    if id == '' then id = tostring(seq) end
    local rec = {
      id = id, name = ARGV[base + 2], group = ARGV[base + 4], priority = tonumber(ARGV[base + 5]), seq = seq,
      attempts_made = 0, starts = 0, stalls = 0, created_ms = now, opts = cjson.decode(ARGV[base + 8]),
    }
    local cost = tonumber(ARGV[base + 7])
    if cost > 0 then rec.cost = cost end
    rcall('HSET', k.data, id, ARGV[base + 3])
    local delay = tonumber(ARGV[base + 6])
    if delay > 0 then
      rec.state = 'delayed'
      rec.due_ms = now + delay
      rcall('ZADD', k.delayed, rec.due_ms, id)
    else
      push_wait(k, cfg, rec)
    end
    save_rec(k, rec)
    added = added + 1
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if added > 0 then wake(k, added) end
return out
