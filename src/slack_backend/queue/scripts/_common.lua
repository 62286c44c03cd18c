-- Shared helpers, pasted into each script at its `--@include _common.lua` line by the loader.
--
-- Data model (every key under one hash tag, so Redis Cluster keeps a queue in one slot):
--   jobs          HASH  id -> job record (JSON: name, group, priority, seq, state, attempts_made, ...)
--                 an active job's lease token is its record's worker:seq:starts (see lease_of)
--   data          HASH  id -> job data (JSON text, opaque to Lua)
--   wait          ZSET  score 0, member group \0 priority(10) seq(16) id: one ordered run per group
--   groups        ZSET  group -> place (stride scheduling): the groups that may start a job now, ordered by
--                       pass, then by the tick the pass was taken at (see place_score), never by name
--   group_pass    HASH  group -> "pass tick": a group's place, kept while the group is parked at its cap or
--                       rate, dropped once it has nothing waiting or running
--   groups_limited ZSET group -> ms when its own rate limit lets it start again
--   group_waiting HASH  group -> waiting jobs;  group_active HASH group -> jobs running
--   group_conf    HASH  group -> JSON {weight, concurrency, rate_max, rate_duration_ms, rate_margin_ms}
--   group_limiter HASH  group -> JSON array of its last start times (ms), oldest first
--   delayed / active / completed / failed  ZSET id -> due ms / lease deadline ms / finish ms
--   limiter       LIST  the last `rate_max` start times (ms), newest first: an exact sliding window
--   meta          HASH  seq, vclock (the lowest pass of the ready set), tick (places handed out), paused, hold_until_ms, budget_used, config (JSON),
--                       group_conf_n (how many groups have settings of their own: 0 skips the lookups)
--   budget        ZSET  reservation (id:starts) -> ms it was made;  budget_cost HASH reservation -> tokens
--   events        STREAM (MAXLEN ~);  wake  LIST workers block on
--   dedup         ZSET  caller-chosen job id -> ms until which a new add of it is refused
--   fetches       HASH  worker id (#lane) -> JSON {req, jobs = {id, token, ...}}: its last fetch, replayed when re-sent
--   A finished run leaves its token and answer in the record (`done`, the last 4 runs): a finishing call re-sent
--   after a lost reply finds it there and answers as the first did, changing nothing, even if the job ran again.
local rcall = redis.call

-- Redis's clock in ms, as a number and as the digits a record stores. Built from TIME's two strings (seconds,
-- microseconds) by string work: each number Lua turns into text, or text into a number, costs a libc conversion.
local function now_ms()
  local t = rcall('TIME')
  local text = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(text), text
end

local function wait_member(rec)
  return rec.group .. '\0' .. string.format('%010d%016d', rec.priority, rec.seq) .. rec.id
end

local function split_member(member)
  local p = string.find(member, '\0', 1, true)
  return string.sub(member, 1, p - 1), string.sub(member, p + 27)
end

local function read_config(raw, group_conf_n)
  local cfg = {}
  if raw then cfg = cjson.decode(raw) end
  cfg.has_group_conf = tonumber(group_conf_n or '0') > 0
  return cfg
end

local function load_config(k)
  local raw = rcall('HMGET', k.meta, 'config', 'group_conf_n')
  return read_config(raw[1], raw[2])
end

-- The config, read from Redis only if a field is looked at: a finish that touches no group bookkeeping
-- then costs no read.
local function lazy_config(k)
  return setmetatable({}, {__index = function(t, name)
    setmetatable(t, nil)
    for key, value in pairs(load_config(k)) do rawset(t, key, value) end
    return rawget(t, name)
  end})
end

local function group_settings(k, cfg, group)
  local s = {
    weight = 1,
    concurrency = tonumber(cfg.group_concurrency or 0),
    rate_max = tonumber(cfg.group_rate_max or 0),
    rate_duration_ms = tonumber(cfg.group_rate_duration_ms or 0),
    rate_margin_ms = tonumber(cfg.group_rate_margin_ms or 0),
  }
  local raw = nil
  if cfg.has_group_conf then raw = rcall('HGET', k.group_conf, group) end
  if raw then
    local o = cjson.decode(raw)
    for name, value in pairs(o) do s[name] = tonumber(value) end
  end
  if s.weight <= 0 then s.weight = 1 end
  s.rate_duration_ms = s.rate_duration_ms + s.rate_margin_ms
  return s
end

-- Ties of pass break by tick, the order places were handed out: folded into the score as a fraction below
-- 2^-10 (a pass step is 1/weight, so weights up to 1024 keep their order). Ticks wrap every 65536 places, where
-- one tie may break the other way; a pass beyond 2^27 starts leaves doubles too few bits to tell ticks apart.
local TICK_SPAN = 65536

local function place_score(pass, tick)
  -- %.17g: Redis would write a Lua number with 14 digits, cutting the tick off.
  return string.format('%.17g', pass + (tick % TICK_SPAN) * 2 ^ -26)
end

-- A group's saved place: pass and tick (nil when it has none).
local function read_place(raw)
  if not raw then return nil, nil end
  local pass, tick = string.match(raw, '^(%S+) (%S+)$')
  return tonumber(pass), tonumber(tick)
end

local function save_place(k, group, pass, tick)
  rcall('HSET', k.group_pass, group, string.format('%.17g %d', pass, tick))
end

local function new_tick(k)
  return rcall('HINCRBY', k.meta, 'tick', 1)
end

-- Put a group in the ready set if it has waiting work, is under its cap and is not rate-held.
-- Returns true when it was added (so the caller can wake a worker).
local function make_ready(k, cfg, group)
  if rcall('ZSCORE', k.groups, group) or rcall('ZSCORE', k.groups_limited, group) then return false end
  if tonumber(rcall('HGET', k.group_waiting, group) or '0') <= 0 then
    -- Nothing waiting and nothing running: the group is gone until new work comes, and so is its place.
    if rcall('HEXISTS', k.group_active, group) == 0 then rcall('HDEL', k.group_pass, group) end
    return false
  end
  local s = group_settings(k, cfg, group)
  if s.concurrency > 0 and tonumber(rcall('HGET', k.group_active, group) or '0') >= s.concurrency then
    return false
  end
  -- A group parked at its cap or rate comes back to the place it held; one new, or one whose place the
  -- schedule has passed, starts at the virtual time (the lowest pass of the ready set): it neither jumps
  -- ahead nor pays for time it had nothing to run.
  local vclock = tonumber(rcall('HGET', k.meta, 'vclock') or '0')
  local pass, tick = read_place(rcall('HGET', k.group_pass, group))
  if not pass or pass < vclock then
    pass, tick = vclock, new_tick(k)
    save_place(k, group, pass, tick)
  end
  rcall('ZADD', k.groups, place_score(pass, tick), group)
  return true
end

local function push_wait(k, cfg, rec)
  rec.state = 'waiting'
  -- Numbers as text: Redis writes each number argument out with snprintf('%.17g').
  rcall('ZADD', k.wait, '0', wait_member(rec))
  rcall('HINCRBY', k.group_waiting, rec.group, '1')
  return make_ready(k, cfg, rec.group)
end

-- Remove a waiting job's entry; keeps group bookkeeping exact.
local function pull_wait(k, rec)
  if rcall('ZREM', k.wait, wait_member(rec)) == 1 then
    local left = rcall('HINCRBY', k.group_waiting, rec.group, -1)
    if left <= 0 then
      rcall('HDEL', k.group_waiting, rec.group)
      rcall('ZREM', k.groups, rec.group)
      rcall('ZREM', k.groups_limited, rec.group)
      -- Nothing left to run: its place goes too (see make_ready), or removed groups' places would pile up.
      if rcall('HEXISTS', k.group_active, rec.group) == 0 then rcall('HDEL', k.group_pass, rec.group) end
    end
  end
end

-- A running job of the group stopped: free its slot and let the group compete again. True when a worker
-- should be woken: the group became ready, or a slot under the global cap freed (workers blocked at the cap
-- wait on the wake list, not on a timer).
local function leave_active(k, cfg, rec, id)
  rcall('ZREM', k.active, id)
  local left = rcall('HINCRBY', k.group_active, rec.group, -1)
  if left <= 0 then rcall('HDEL', k.group_active, rec.group) end
  local ready = make_ready(k, cfg, rec.group)
  return ready or tonumber(cfg.global_concurrency or 0) > 0
end

local function emit(k, max_events, event, id, ...)
  rcall('XADD', k.events, 'MAXLEN', '~', max_events, '*', 'event', event, 'job_id', id, ...)
end

local function wake(k, n)
  local tokens = {}
  for i = 1, math.min(n, 64) do tokens[i] = '1' end
  -- Tokens pile up while every worker is busy; trimmed back to 256 once past 512, not on every push.
  if #tokens > 0 and rcall('LPUSH', k.wake, unpack(tokens)) > 512 then rcall('LTRIM', k.wake, 0, 255) end
end

local function delete_job(k, id)
  rcall('HDEL', k.jobs, id)
  rcall('HDEL', k.data, id)
end

-- Delete finished jobs' records and data (a finished job holds no lease), a thousand per command.
local function delete_finished(k, ids)
  for from = 1, #ids, 1000 do
    local chunk = {unpack(ids, from, math.min(from + 999, #ids))}
    rcall('HDEL', k.jobs, unpack(chunk))
    rcall('HDEL', k.data, unpack(chunk))
  end
end

-- Keep the newest `keep_count` (when >= 0) and none older than `keep_age_ms` (when > 0) in a finished set.
local function trim_finished(k, set, keep_count, keep_age_ms, now)
  if keep_age_ms > 0 then
    local old = rcall('ZRANGEBYSCORE', set, '-inf', now - keep_age_ms, 'LIMIT', 0, 1000)
    if #old > 0 then
      delete_finished(k, old)
      rcall('ZREM', set, unpack(old))
    end
  end
  if keep_count >= 0 then
    -- Everything but the newest keep_count, by rank: one read, whether there is excess or not.
    local victims = rcall('ZRANGE', set, 0, -(keep_count + 1))
    if #victims > 0 then
      delete_finished(k, victims)
      rcall('ZREMRANGEBYRANK', set, 0, #victims - 1)
    end
  end
end

-- Token budget: reservations made at start, settled at finish, counted while younger than the window.
local function reservation(rec)
  return rec.id .. ':' .. (rec.starts or 0)
end

local function budget_add(k, tokens)
  local used = tonumber(rcall('HINCRBY', k.meta, 'budget_used', tokens))
  if used < 0 then rcall('HSET', k.meta, 'budget_used', 0) end
end

-- Settle a reservation to `tokens` (nil: drop it, nothing was spent); a reservation already out of the
-- window no longer counts and is left alone. Returns true when budget was given back (a worker blocked on the
-- budget may start now).
local function budget_settle(k, rec, tokens)
  local member = reservation(rec)
  local reserved = rcall('HGET', k.budget_cost, member)
  if not reserved then return false end
  if tokens == nil then
    rcall('ZREM', k.budget, member)
    rcall('HDEL', k.budget_cost, member)
    budget_add(k, -tonumber(reserved))
  else
    rcall('HSET', k.budget_cost, member, tokens)
    budget_add(k, tokens - tonumber(reserved))
  end
  return tokens == nil or tokens < tonumber(reserved)
end

local function load_rec(k, id)
  local raw = rcall('HGET', k.jobs, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

-- The token of the run that holds an active job: written nowhere else, so it costs no command to keep, and
-- a start (starts + 1) or a recovery (state no longer active) invalidates the old one.
local function lease_of(rec)
  if rec.state ~= 'active' or not rec.worker then return nil end
  -- %d, not Lua's own number text: that is a '%.14g' conversion per number, and rounds past 14 digits.
  return string.format('%s:%d:%d', rec.worker, rec.seq, rec.starts)
end

-- The answer given to the finishing call `kind` ('complete' | 'fail' | 'release') of the run holding `token`
-- ({token, attempts_made, final, kind}), if that run finished so: the same call re-sent after a lost reply gets it
-- again. Another kind of call with that token is refused as any stale run's is.
local function finished_run(rec, token, kind)
  if type(rec.done) ~= 'table' then return nil end
  for _, d in ipairs(rec.done) do
    if d[1] == token and d[4] == kind then return d end
  end
  return nil
end

local function remember_run(rec, token, attempts_made, final, kind)
  local done = rec.done
  if type(done) ~= 'table' or done[1] == nil then done = {} end
  table.insert(done, 1, {token, attempts_made, final, kind})
  while #done > 4 do table.remove(done) end
  rec.done = done
end

local function save_rec(k, rec)
  rcall('HSET', k.jobs, rec.id, cjson.encode(rec))
end

-- A fetch re-sent after its reply was lost (same worker, same request id) answers with the same jobs, as long as
-- their leases are still that run's; it never leases a second batch nobody would run. Request ids grow (fixed
-- width): one older than the last remembered is a send its worker gave up on and has fetched since (redis-py
-- still retrying it in the background), and starts nothing.
-- A worker with two calls in flight fetches on two lanes, and names the lane in the request id ("1:000...", none for
-- lane 0): each lane keeps its own last fetch, so a lost reply on one is replayed while the other goes on.
local function fetch_field(worker_id, req)
  local lane = string.match(req, '^(%d+):')
  if lane then return worker_id .. '#' .. lane end
  return worker_id
end

local function fetch_replay(k, worker_id, req)
  if req == '' then return nil end
  local raw = rcall('HGET', k.fetches, fetch_field(worker_id, req))
  if not raw then return nil end
  local last = cjson.decode(raw)
  if last.req ~= req then
    if #req == #last.req and req < last.req then return {1, -1} end
    return nil
  end
  local out = {0, -1}
  for i = 1, #last.jobs, 2 do
    local id, token = last.jobs[i], last.jobs[i + 1]
    local rec = load_rec(k, id)
    if rec and lease_of(rec) == token then
      out[#out + 1] = id
      out[#out + 1] = cjson.encode(rec)
      out[#out + 1] = rcall('HGET', k.data, id) or false
      out[#out + 1] = token
    end
  end
  return out
end

-- Remember what a fetch started, for fetch_replay (a fetch that started nothing keeps only its request id, so a
-- stale send arriving after it is still known as stale), and the jobs the same call completed (`completed`, ids
-- answered 0; see fetch_completed). The worker deletes its field when it closes.
local function fetch_remember(k, worker_id, req, out, completed)
  if req == '' then return end
  local jobs = {}
  for i = 3, #out, 4 do
    jobs[#jobs + 1] = out[i]
    jobs[#jobs + 1] = out[i + 3]
  end
  rcall('HSET', k.fetches, fetch_field(worker_id, req), cjson.encode({req = req, jobs = jobs, done = completed or {}}))
end

-- Whether the lane's last call, when it was request `req`, completed job `id`: a completion re-sent after its reply
-- was lost may find the record already trimmed by retention (the other lane and other workers go on completing
-- meanwhile), and answers as the first run did. Looked up only for a record that is gone.
local function fetch_completed(k, worker_id, req, id)
  if req == '' then return false end
  local raw = rcall('HGET', k.fetches, fetch_field(worker_id, req))
  if not raw then return false end
  local last = cjson.decode(raw)
  if last.req ~= req or type(last.done) ~= 'table' then return false end
  for _, done_id in ipairs(last.done) do
    if done_id == id then return true end
  end
  return false
end
