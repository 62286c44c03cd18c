-- fetch: start up to N jobs for one worker: due delayed -> waiting, then the limits, then fair pick and lease.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] worker id (lease tokens are worker_id:starts)
-- ARGV[2] lease length ms
-- ARGV[3] most jobs to start
-- Order of checks: paused, queue hold (upstream Retry-After), global rate limit, global concurrency cap,
-- then per group: rate limit (group set aside until due), concurrency cap (group set aside until a slot frees),
-- then the token budget for the job about to start (its `cost` is reserved in the sliding window).
-- Returns: {status, wait_ms, id1, rec1, data1, token1, id2, ...}
--   status 0 started jobs | 1 nothing waiting | 2 rate limited | 3 paused | 4 held | 5 at global concurrency cap
--   | 6 token budget spent until the window frees room
--   wait_ms: how long until something may change (next due delayed job, limiter slot, hold end); -1 = unknown
-- Events: none (a start is visible in the active set); a fetch that finds nothing clears stale wake tokens.
--@include _common.lua
local worker_id = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local now = now_ms()
local cfg = load_config(k)

-- Due delayed jobs become waiting first, so they compete fairly with the rest.
local due = rcall('ZRANGEBYSCORE', k.delayed, '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  for _, id in ipairs(due) do
    local rec = load_rec(k, id)
    if rec then
      rec.due_ms = nil
      push_wait(k, cfg, rec)
      save_rec(k, rec)
    end
  end
  rcall('ZREM', k.delayed, unpack(due))
end
local freed = rcall('ZRANGEBYSCORE', k.groups_limited, '-inf', now, 'LIMIT', 0, 1000)
if #freed > 0 then
  rcall('ZREM', k.groups_limited, unpack(freed))
  for _, g in ipairs(freed) do make_ready(k, cfg, g) end
end

local function next_change_ms()
  local best = -1
  local d = rcall('ZRANGE', k.delayed, 0, 0, 'WITHSCORES')
  if #d > 0 then best = math.max(0, tonumber(d[2]) - now) end
  local g = rcall('ZRANGE', k.groups_limited, 0, 0, 'WITHSCORES')
  if #g > 0 then
    local w = math.max(0, tonumber(g[2]) - now)
    if best < 0 or w < best then best = w end
  end
  return best
end

if rcall('HGET', k.meta, 'paused') then return {3, -1} end
local hold_until = tonumber(rcall('HGET', k.meta, 'hold_until_ms') or '0')
if hold_until > now then return {4, hold_until - now} end

-- Reservations older than the window no longer count against the budget.
local budget_max = tonumber(cfg.budget_tokens or 0)
local budget_window = tonumber(cfg.budget_window_ms or 0)
if budget_max > 0 then
  local old = rcall('ZRANGEBYSCORE', k.budget, '-inf', now - budget_window, 'LIMIT', 0, 1000)
  if #old > 0 then
    local freed_tokens = 0
    for _, member in ipairs(old) do
      freed_tokens = freed_tokens + tonumber(rcall('HGET', k.budget_cost, member) or '0')
      rcall('HDEL', k.budget_cost, member)
    end
    rcall('ZREM', k.budget, unpack(old))
    budget_add(k, -freed_tokens)
  end
end

local rate_max = tonumber(cfg.rate_max or 0)
local rate_duration = tonumber(cfg.rate_duration_ms or 0)
local global_cap = tonumber(cfg.global_concurrency or 0)
local out = {0, -1}
local started = 0
local status = 1
local wait_ms = -1
local tries = 0
while started < want and tries < want + 32 do
  tries = tries + 1
  if rate_max > 0 then
    local nth = rcall('LINDEX', k.limiter, rate_max - 1)
    if nth and tonumber(nth) > now - rate_duration then
      status = 2
      wait_ms = tonumber(nth) + rate_duration - now
      break
    end
  end
  if global_cap > 0 and rcall('ZCARD', k.active) >= global_cap then
    status = 5
    break
  end
  local head = rcall('ZRANGE', k.groups, 0, 0, 'WITHSCORES')
  if #head == 0 then
    status = 1
    break
  end
  local group, pass = head[1], tonumber(head[2])
  local s = group_settings(k, cfg, group)
  local glog = nil
  local blocked = false
  if s.concurrency > 0 and tonumber(rcall('HGET', k.group_active, group) or '0') >= s.concurrency then
    rcall('ZREM', k.groups, group)
    blocked = true
  end
  if not blocked and s.rate_max > 0 then
    glog = cjson.decode(rcall('HGET', k.group_limiter, group) or '[]')
    local n = #glog
    if n >= s.rate_max and tonumber(glog[n - s.rate_max + 1]) > now - s.rate_duration_ms then
      rcall('ZREM', k.groups, group)
      rcall('ZADD', k.groups_limited, tonumber(glog[n - s.rate_max + 1]) + s.rate_duration_ms, group)
      blocked = true
    end
  end
  local members = {}
  local id, rec = nil, nil
  if not blocked then
    members = rcall('ZRANGEBYLEX', k.wait, '[' .. group .. '\0', '(' .. group .. '\1', 'LIMIT', 0, 1)
    if #members > 0 then
      local _
      _, id = split_member(members[1])
      rec = load_rec(k, id)
    end
  end
  if rec and budget_max > 0 then
    local cost = math.min(tonumber(rec.cost or 0), budget_max)
    local used = tonumber(rcall('HGET', k.meta, 'budget_used') or '0')
    if cost > 0 and used + cost > budget_max then
      -- Wait for the oldest reservation to leave the window; then look again (more may need to leave).
      local oldest = rcall('ZRANGE', k.budget, 0, 0, 'WITHSCORES')
      status = 6
      wait_ms = 1
      if #oldest > 0 then wait_ms = math.max(1, tonumber(oldest[2]) + budget_window - now) end
      break
    end
  end
  if not blocked then
    if #members == 0 then
      -- Bookkeeping said the group had work; repair rather than spin.
      rcall('ZREM', k.groups, group)
      rcall('HDEL', k.group_waiting, group)
    else
      rcall('ZREM', k.wait, members[1])
      local left = rcall('HINCRBY', k.group_waiting, group, -1)
      rcall('HSET', k.meta, 'vclock', pass)
      local active_now = rcall('HINCRBY', k.group_active, group, 1)
      if left <= 0 then
        rcall('HDEL', k.group_waiting, group)
        rcall('ZREM', k.groups, group)
      elseif s.concurrency > 0 and active_now >= s.concurrency then
        rcall('ZREM', k.groups, group)
      else
        rcall('ZADD', k.groups, pass + 1 / s.weight, group)
      end
      if rate_max > 0 then
        rcall('LPUSH', k.limiter, now)
        rcall('LTRIM', k.limiter, 0, rate_max - 1)
      end
      if s.rate_max > 0 then
        glog[#glog + 1] = now
        while #glog > s.rate_max do table.remove(glog, 1) end
        rcall('HSET', k.group_limiter, group, cjson.encode(glog))
      end
      local data = rcall('HGET', k.data, id)
      if rec then
        rec.state = 'active'
        rec.starts = (rec.starts or 0) + 1
        rec.processed_ms = now
        if not rec.first_processed_ms then rec.first_processed_ms = now end
        local token = worker_id .. ':' .. rec.seq .. ':' .. rec.starts
        rec.worker = worker_id
        save_rec(k, rec)
        rcall('HSET', k.leases, id, token)
        local cost = tonumber(rec.cost or 0)
        if budget_max > 0 and cost > 0 then
          local member = reservation(rec)
          rcall('ZADD', k.budget, now, member)
          rcall('HSET', k.budget_cost, member, cost)
          budget_add(k, cost)
        end
        rcall('ZADD', k.active, now + lease_ms, id)
        out[#out + 1] = id
        out[#out + 1] = cjson.encode(rec)
        out[#out + 1] = data or false
        out[#out + 1] = token
        started = started + 1
      else
        -- A waiting entry without its record (removed by hand): drop it and give the slot back.
        local back = rcall('HINCRBY', k.group_active, group, -1)
        if back <= 0 then rcall('HDEL', k.group_active, group) end
      end
    end
  end
end
if started > 0 then
  status = 0
elseif status == 1 then
  wait_ms = next_change_ms()
  if rcall('ZCARD', k.groups) == 0 then rcall('DEL', k.wake) end
end
if status == 1 or status == 5 then
  local w = next_change_ms()
  if w >= 0 and (wait_ms < 0 or w < wait_ms) then wait_ms = w end
end
out[1] = status
out[2] = wait_ms
return out
