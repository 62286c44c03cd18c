-- complete: active jobs finished; keep their results, trim the completed set and (if asked) start the next
-- jobs for the same worker, all in one step.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] keep count (-1 = all)  ARGV[2] keep age ms (0 = no age limit)  ARGV[3] max events
-- ARGV[4] worker id  ARGV[5] lease ms  ARGV[6] jobs to start next (0 = none; the fetch transition, see fetch.lua)
-- ARGV[7] the fetch's request id ('' = none; see fetch.lua)
-- then per job, four arguments: job id, lease token, result (JSON text),
--   tokens the run really used (-1 = unknown: its budget reservation stands)
-- Returns: {finished_ms, code1, code2, ...} in argument order; code 0 ok | -1 job not found | -2 lease lost;
--   a completion re-sent after a lost reply (its run is in the record's `done`, or, for a record retention has
--   trimmed since, in what the call's fetch lane remembers) answers 0 again;
--   when jobs to start next > 0, fetch's reply follows the codes: status, wait_ms, id1, rec1, data1, token1, ...
-- Events: one completed entry per call: job_ids, groups, wait_ms (enqueue to first start), run_ms (this run),
--   each a JSON array in job order; the stream is then trimmed to hold about max events jobs
-- A worker sends the completions that land together in one call: the bookkeeping that is per call (the
-- clock, the trim, the set updates) is then paid once per batch instead of once per job.
--@include _common.lua
--@include _fetch.lua
local keep_count, keep_age, max_events = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local worker_id, lease_ms, want = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local req = ARGV[7]
local n = (#ARGV - 7) / 4
local ids = {}
for i = 1, n do ids[i] = ARGV[4 * i + 4] end
local now, now_text = now_ms()
local out = {now}
-- Ids this call answers 0, remembered with its fetch (fetch_remember) for a re-send that finds a record trimmed.
local answered = {}

-- The next jobs start after the finishes are written, so the slots and group counts they free are seen.
local function then_fetch()
  if want <= 0 then return out end
  local fetched = fetch_replay(k, worker_id, req)
  if not fetched then
    fetched = fetch_jobs(k, now, worker_id, lease_ms, want)
    fetch_remember(k, worker_id, req, fetched, answered)
  end
  for _, value in ipairs(fetched) do out[#out + 1] = value end
  return out
end

if n < 1 then return then_fetch() end
local raws = rcall('HMGET', k.jobs, unpack(ids))
local done, records, finished_at, seen = {}, {}, {}, {}
local groups, waits, runs = {}, {}, {}
local per_group = {}
local budget_freed = false
for i = 1, n do
  local id = ids[i]
  local code = 0
  local rec = raws[i] and cjson.decode(raws[i])
  if not rec then
    code = -1
    if fetch_completed(k, worker_id, req, id) then code = 0 end
  elseif finished_run(rec, ARGV[4 * i + 5], 'complete') then
    code = 0 -- this very run's completion, re-sent: already written
  elseif lease_of(rec) ~= ARGV[4 * i + 5] or seen[id] then
    code = -2
  else
    seen[id] = true
    local used = tonumber(ARGV[4 * i + 7])
    if used >= 0 then
      if budget_settle(k, rec, used) then budget_freed = true end
      rec.cost_used = used
    end
    rec.state = 'completed'
    rec.finished_ms = now
    rec.attempts_made = rec.attempts_made + 1
    rec.result = ARGV[4 * i + 6]
    remember_run(rec, ARGV[4 * i + 5], rec.attempts_made, 1, 'complete')
    done[#done + 1] = id
    records[#records + 1] = id
    records[#records + 1] = cjson.encode(rec)
    finished_at[#finished_at + 1] = now_text -- as text: a number argument costs Redis an snprintf
    finished_at[#finished_at + 1] = id
    per_group[rec.group] = (per_group[rec.group] or 0) + 1
    groups[#groups + 1] = rec.group
    waits[#waits + 1] = (rec.first_processed_ms or now) - rec.created_ms
    runs[#runs + 1] = now - (rec.processed_ms or now)
  end
  out[#out + 1] = code
  if code == 0 then answered[#answered + 1] = id end
end
if #done == 0 then return then_fetch() end
rcall('ZREM', k.active, unpack(done))
rcall('HSET', k.jobs, unpack(records))
rcall('ZADD', k.completed, unpack(finished_at))
local cfg = lazy_config(k)
local woke = 0
for group, count in pairs(per_group) do
  local left = rcall('HINCRBY', k.group_active, group, -count)
  if left <= 0 then rcall('HDEL', k.group_active, group) end
  if make_ready(k, cfg, group) then woke = woke + 1 end
end
-- Workers blocked at the global cap or on the budget wait on the wake list: a freed slot or settled budget
-- must end their wait, as a new job would.
if tonumber(cfg.global_concurrency or 0) > 0 then woke = woke + 1 end
if budget_freed then woke = woke + 1 end
trim_finished(k, k.completed, keep_count, keep_age, now)
-- The stream is capped near max_events jobs, not entries: an entry of n jobs trims to max_events / n entries
-- (at least 100), so a busy spell's big entries never pile up to max_events of them.
local cap = math.max(100, math.floor(tonumber(max_events) / #done))
rcall('XADD', k.events, 'MAXLEN', '~', cap, '*', 'event', 'completed', 'job_ids', cjson.encode(done),
  'groups', cjson.encode(groups), 'wait_ms', cjson.encode(waits), 'run_ms', cjson.encode(runs))
if woke > 0 then wake(k, woke) end
return then_fetch()
