-- add: put new jobs in the queue (waiting, or delayed when a delay is given); idempotent by job id.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] JSON array of specs {id?, name, data (text), group, priority, delay_ms, cost, opts}
-- ARGV[2] max events kept in the stream
-- Returns: flat array {id, created (1 new | 0 already there), ...}
-- Events: none per job (the stream carries finishes); wakes idle workers.
--@include _common.lua
local specs = cjson.decode(ARGV[1])
local max_events = tonumber(ARGV[2])
local now = now_ms()
local cfg = load_config(k)
local out = {}
local added = 0
for _, spec in ipairs(specs) do
  local id = spec.id
  if id and rcall('HEXISTS', k.jobs, id) == 1 then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local seq = rcall('HINCRBY', k.meta, 'seq', 1)
    if not id then id = tostring(seq) end
    local rec = {
      id = id, name = spec.name, group = spec.group, priority = spec.priority, seq = seq,
      attempts_made = 0, starts = 0, stalls = 0, created_ms = now, opts = spec.opts, cost = spec.cost,
    }
    rcall('HSET', k.data, id, spec.data)
    local delay = tonumber(spec.delay_ms or 0)
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
