-- add: put new jobs in the queue (waiting, or delayed when a delay is given); idempotent by job id.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] de-duplication TTL ms (0 = only while the record is kept)
-- ARGV[2] the first job, ARGV[3] the next, and so on; each job is six fields joined by NUL (none of them
--   holds one: ids and groups are refused with NUL, JSON escapes it):
--   id (all digits: chosen by the client library for a job given none, kept only while the job is; '' = the
--   queue numbers it; anything else: the caller's, refused for the de-duplication TTL), group, priority,
--   delay ms,
--   the record's head (the JSON object the record is, without its closing brace: name, group, priority, the
--   counters at 0, opts, cost; the script adds id, seq, created_ms, state and due_ms),
--   data (JSON text, stored as is; last, so it is never scanned)
-- Returns: flat array {id, created (1 new | 0 already there or seen within the TTL), ...}
-- A caller-chosen id is remembered in `dedup` (id -> expiry ms) for the TTL, so a Slack retry minutes later is
-- refused even after retention trimmed the finished record. An all-digit id is never the caller's, so it is
-- never looked up there.
-- Events: none per job (the stream carries finishes); wakes idle workers.
-- The client encodes what it knows of the record, so Lua decodes and encodes no JSON here: a job costs its
-- Redis commands (seq, the record by HSETNX, which is also the "already there" check, its data, the waiting
-- set and group counts, one wake) and string work.
--@include _common.lua
local now, now_text = now_ms()
local cfg = lazy_config(k)
local out = {}
local added = 0
local dedup_ttl = tonumber(ARGV[1])
local find, sub, format = string.find, string.sub, string.format
local trimmed = false

for n = 2, #ARGV do
  local spec = ARGV[n]
  local a = find(spec, '\0', 1, true)
  local b = find(spec, '\0', a + 1, true)
  local c = find(spec, '\0', b + 1, true)
  local d = find(spec, '\0', c + 1, true)
  local e = find(spec, '\0', d + 1, true)
  local id = sub(spec, 1, a - 1)
  -- Ids the library or the queue chose are digits; only the caller's are kept in `dedup`.
  local digits = id == '' or find(id, '^%d+$') ~= nil
  local callers = not digits and dedup_ttl > 0
  local seen = false
  if callers then
    local until_ms = rcall('ZSCORE', k.dedup, id)
    seen = until_ms ~= false and tonumber(until_ms) > now
  end
  local created = 0
  if not seen then
    local seq = rcall('HINCRBY', k.meta, 'seq', '1')
    if id == '' then id = format('%d', seq) end
    local id_json = digits and '"' .. id .. '"' or cjson.encode(id)
    local delay_text = sub(spec, c + 1, d - 1)
    local delay = delay_text == '0' and 0 or tonumber(delay_text)
    local tail
    if delay > 0 then
      tail = ',"state":"delayed","due_ms":' .. format('%d', now + delay) .. '}'
    else
      tail = ',"state":"waiting"}'
    end
    local record = sub(spec, d + 1, e - 1) .. ',"id":' .. id_json .. ',"seq":' .. format('%d', seq) .. ',"created_ms":' .. now_text .. tail
    -- HSETNX is the "already there" check as well: a re-sent add (its reply lost) finds its own record. The
    -- seq it took is then skipped, which orders nothing differently.
    if rcall('HSETNX', k.jobs, id, record) == 1 then
      created = 1
      if callers then
        if not trimmed then
          rcall('ZREMRANGEBYSCORE', k.dedup, '-inf', now)
          trimmed = true
        end
        rcall('ZADD', k.dedup, now + dedup_ttl, id)
      end
      rcall('HSET', k.data, id, sub(spec, e + 1))
      if delay > 0 then
        rcall('ZADD', k.delayed, now + delay, id)
      else
        push_wait(k, cfg, {id = id, group = sub(spec, a + 1, b - 1), priority = tonumber(sub(spec, b + 1, c - 1)), seq = seq})
      end
      added = added + 1
    end
  end
  out[#out + 1] = id
  out[#out + 1] = created
end
if added > 0 then wake(k, added) end
return out
