-- complete: active jobs finished; keep their results and trim the completed set, all in one step.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] keep count (-1 = all)  ARGV[2] keep age ms (0 = no age limit)  ARGV[3] max events
-- then per job, four arguments: job id, lease token, result (JSON text),
--   tokens the run really used (-1 = unknown: its budget reservation stands)
-- Returns: {finished_ms, code1, code2, ...} in argument order; code 0 ok | -1 job not found | -2 lease lost
-- Events: one completed entry per call: job_ids, groups, wait_ms (enqueue to first start), run_ms (this run),
--   each a JSON array in job order
-- A worker sends the completions that land together in one call: the bookkeeping that is per call (the
-- clock, the trim, the set updates) is then paid once per batch instead of once per job.
--@include _common.lua
local keep_count, keep_age, max_events = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local n = (#ARGV - 3) / 4
if n < 1 then return {0} end
local ids = {}
for i = 1, n do ids[i] = ARGV[4 * i] end
local raws = rcall('HMGET', k.jobs, unpack(ids))
local leases = rcall('HMGET', k.leases, unpack(ids))
local now = now_ms()
local out = {now}
local done, records, finished_at, seen = {}, {}, {}, {}
local groups, waits, runs = {}, {}, {}
local per_group = {}
for i = 1, n do
  local id = ids[i]
  local code = 0
  if not raws[i] then
    code = -1
  elseif leases[i] ~= ARGV[4 * i + 1] or seen[id] then
    code = -2
  else
    seen[id] = true
    local rec = cjson.decode(raws[i])
    local used = tonumber(ARGV[4 * i + 3])
    if used >= 0 then
      budget_settle(k, rec, used)
      rec.cost_used = used
    end
    rec.state = 'completed'
    rec.finished_ms = now
    rec.attempts_made = rec.attempts_made + 1
    rec.result = ARGV[4 * i + 2]
    done[#done + 1] = id
    records[#records + 1] = id
    records[#records + 1] = cjson.encode(rec)
    finished_at[#finished_at + 1] = now
    finished_at[#finished_at + 1] = id
    per_group[rec.group] = (per_group[rec.group] or 0) + 1
    groups[#groups + 1] = rec.group
    waits[#waits + 1] = (rec.first_processed_ms or now) - rec.created_ms
    runs[#runs + 1] = now - (rec.processed_ms or now)
  end
  out[#out + 1] = code
end
if #done == 0 then return out end
rcall('ZREM', k.active, unpack(done))
rcall('HDEL', k.leases, unpack(done))
rcall('HSET', k.jobs, unpack(records))
rcall('ZADD', k.completed, unpack(finished_at))
local cfg = load_config(k)
local woke = 0
for group, count in pairs(per_group) do
  local left = rcall('HINCRBY', k.group_active, group, -count)
  if left <= 0 then rcall('HDEL', k.group_active, group) end
  if make_ready(k, cfg, group) then woke = woke + 1 end
end
trim_finished(k, k.completed, keep_count, keep_age, now)
rcall('XADD', k.events, 'MAXLEN', '~', max_events, '*', 'event', 'completed', 'job_ids', cjson.encode(done),
  'groups', cjson.encode(groups), 'wait_ms', cjson.encode(waits), 'run_ms', cjson.encode(runs))
if woke > 0 then wake(k, woke) end
return out
