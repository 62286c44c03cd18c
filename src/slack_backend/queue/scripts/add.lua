-- add: put new jobs in the queue (waiting, or delayed when a delay is given); idempotent by job id.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] de-duplication TTL ms (0 = only while the record is kept)
-- ARGV[2] the first job, ARGV[3] the next, and so on; each job is eight fields joined by NUL (none of them
--   holds one: ids, names and groups are refused with NUL, JSON escapes it):
--   id (all digits: chosen by the client library for a job given none, kept only while the job is; '' = the
--   queue numbers it; anything else: the caller's, refused for the de-duplication TTL), name, group, priority,
--   delay ms, cost (tokens, 0 = none),
--   options (JSON: attempts, backoff), data (JSON text, stored as is; last, so it is never scanned)
-- Returns: flat array {id, created (1 new | 0 already there or seen within the TTL), ...}
-- A caller-chosen id is remembered in `dedup` (id -> expiry ms) for the TTL, so a Slack retry minutes later is
-- refused even after retention trimmed the finished record.
-- Events: none per job (the stream carries finishes); wakes idle workers.
-- Fields travel as plain text, not as one JSON document: the data is encoded once, by the client, and a job
-- is one argument to pack, not eight.
--@include _common.lua
local now = now_ms()
local cfg = lazy_config(k)
local out = {}
local added = 0
local function fields(spec)
  local out, at = {}, 1
  for i = 1, 7 do
    local stop = string.find(spec, '\0', at, true)
    out[i] = string.sub(spec, at, stop - 1)
    at = stop + 1
  end
  out[8] = string.sub(spec, at)
  return out
end

local dedup_ttl = tonumber(ARGV[1])
if dedup_ttl > 0 then rcall('ZREMRANGEBYSCORE', k.dedup, '-inf', now) end
for n = 2, #ARGV do
  local f = fields(ARGV[n])
  local id = f[1]
  if id ~= '' and (rcall('HEXISTS', k.jobs, id) == 1 or (dedup_ttl > 0 and rcall('ZSCORE', k.dedup, id))) then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local seq = rcall('HINCRBY', k.meta, 'seq', 1)
    if id == '' then
      id = tostring(seq)
    elseif dedup_ttl > 0 and not string.match(id, '^%d+$') then
      rcall('ZADD', k.dedup, now + dedup_ttl, id)
    end
    local rec = {
      id = id, name = f[2], group = f[3], priority = tonumber(f[4]), seq = seq,
      attempts_made = 0, starts = 0, stalls = 0, created_ms = now, opts = cjson.decode(f[7]),
    }
    local cost = tonumber(f[6])
    if cost > 0 then rec.cost = cost end
    rcall('HSET', k.data, id, f[8])
    local delay = tonumber(f[5])
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
