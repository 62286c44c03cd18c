-- The fetch transition, shared by fetch.lua and complete.lua (which starts the next jobs as it finishes some).
-- Returns {status, wait_ms, id1, rec1, data1, token1, ...}: see fetch.lua.
-- Fair order: the ready group with the lowest place (pass, then tick) goes first; see make_ready.
local function fetch_jobs(k, now, worker_id, lease_ms, want)
  local meta = rcall('HMGET', k.meta, 'config', 'group_conf_n', 'paused', 'hold_until_ms')
  local cfg = read_config(meta[1], meta[2])

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

  -- Wake tokens pushed before a fetch that cannot start anything (paused, or at the global cap) are stale:
  -- left in the list, each would send an idle worker round again for nothing. Resume and a freed slot push anew.
  if meta[3] then
    rcall('DEL', k.wake)
    return {3, -1}
  end
  local hold_until = tonumber(meta[4] or '0')
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
  -- A start holds its slot for the window plus the guard band (see RateLimit.margin_ms).
  local rate_duration = tonumber(cfg.rate_duration_ms or 0) + tonumber(cfg.rate_margin_ms or 0)
  local global_cap = tonumber(cfg.global_concurrency or 0)
  local out = {0, -1}
  local started = 0
  local status = 1
  local wait_ms = -1
  local tries = 0
  while started < want and tries < want + 32 do
    tries = tries + 1
    local room = want - started
    if rate_max > 0 then
      -- The limiter list holds the last rate_max starts, newest first. Of its last `room` places, those
      -- missing or older than the window are free slots: that many may start now.
      local tail = rcall('LRANGE', k.limiter, math.max(0, rate_max - room), rate_max - 1)
      local free = math.min(room, rate_max) - #tail
      for _, t in ipairs(tail) do
        if tonumber(t) <= now - rate_duration then free = free + 1 end
      end
      if free <= 0 then
        status = 2
        wait_ms = tonumber(tail[#tail]) + rate_duration - now
        break
      end
      room = math.min(room, free)
    end
    if global_cap > 0 then
      local active_n = rcall('ZCARD', k.active)
      if active_n >= global_cap then
        status = 5
        if started == 0 then rcall('DEL', k.wake) end
        break
      end
      room = math.min(room, global_cap - active_n)
    end
    -- The group to serve, and the next one: this group may take the jobs that keep its pass below the next's.
    local head = rcall('ZRANGE', k.groups, 0, 1, 'WITHSCORES')
    if #head == 0 then
      status = 1
      break
    end
    local group = head[1]
    local places = rcall('HMGET', k.group_pass, group, head[3] or group)
    -- A place not saved (a ready set written before places were kept) is its score.
    local pass = read_place(places[1]) or tonumber(head[2])
    local next_pass = nil
    if #head >= 4 then next_pass = read_place(places[2]) or tonumber(head[4]) end
    local s = group_settings(k, cfg, group)
    if next_pass then room = math.min(room, math.max(1, math.ceil((next_pass - pass) * s.weight))) end
    local glog = nil
    local blocked = false
    if s.concurrency > 0 then
      local running = tonumber(rcall('HGET', k.group_active, group) or '0')
      if running >= s.concurrency then
        rcall('ZREM', k.groups, group)
        blocked = true
      else
        room = math.min(room, s.concurrency - running)
      end
    end
    if not blocked and s.rate_max > 0 then
      glog = cjson.decode(rcall('HGET', k.group_limiter, group) or '[]')
      local n = #glog
      if n >= s.rate_max and tonumber(glog[n - s.rate_max + 1]) > now - s.rate_duration_ms then
        rcall('ZREM', k.groups, group)
        rcall('ZADD', k.groups_limited, tonumber(glog[n - s.rate_max + 1]) + s.rate_duration_ms, group)
        blocked = true
      end
      room = 1
    end
    -- Each start under a token budget is checked against the budget on its own.
    if budget_max > 0 then room = 1 end
    local members, ids, raws = {}, {}, {}
    if not blocked then
      members = rcall('ZRANGEBYLEX', k.wait, '[' .. group .. '\0', '(' .. group .. '\1', 'LIMIT', 0, room)
      for i, member in ipairs(members) do
        local _
        _, ids[i] = split_member(member)
      end
      if #ids > 0 then raws = rcall('HMGET', k.jobs, unpack(ids)) end
    end
    local first = nil
    if raws[1] then first = cjson.decode(raws[1]) end
    if first and budget_max > 0 then
      local cost = math.min(tonumber(first.cost or 0), budget_max)
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
        local c = #members
        rcall('ZREM', k.wait, unpack(members))
        local left = rcall('HINCRBY', k.group_waiting, group, -c)
        local active_now = rcall('HINCRBY', k.group_active, group, c)
        -- The group moves on by what it took and keeps that place, in the ready set or parked beside it.
        local new_pass, tick = pass + c / s.weight, new_tick(k)
        save_place(k, group, new_pass, tick)
        -- The virtual time is the lowest pass of the ready set, this group counted even if it parks now.
        local vclock = new_pass
        if next_pass and next_pass < vclock then vclock = next_pass end
        rcall('HSET', k.meta, 'vclock', string.format('%.17g', vclock))
        if left <= 0 then
          rcall('HDEL', k.group_waiting, group)
          rcall('ZREM', k.groups, group)
        elseif s.concurrency > 0 and active_now >= s.concurrency then
          rcall('ZREM', k.groups, group)
        else
          rcall('ZADD', k.groups, place_score(new_pass, tick), group)
        end
        local datas = rcall('HMGET', k.data, unpack(ids))
        local records, deadlines, stamps = {}, {}, {}
        -- The batch's deadline and start stamp as text, once: Redis writes each number argument of a command
        -- out with snprintf('%.17g').
        local deadline, stamp = string.format('%d', now + lease_ms), string.format('%d', now)
        for i, id in ipairs(ids) do
          local rec = first
          if i > 1 and raws[i] then rec = cjson.decode(raws[i]) end
          if raws[i] then
            rec.state = 'active'
            rec.starts = (rec.starts or 0) + 1
            rec.processed_ms = now
            if not rec.first_processed_ms then rec.first_processed_ms = now end
            rec.worker = worker_id
            local token = lease_of(rec)
            local encoded = cjson.encode(rec)
            records[#records + 1] = id
            records[#records + 1] = encoded
            deadlines[#deadlines + 1] = deadline
            deadlines[#deadlines + 1] = id
            stamps[#stamps + 1] = stamp
            local cost = tonumber(rec.cost or 0)
            if budget_max > 0 and cost > 0 then
              local member = reservation(rec)
              rcall('ZADD', k.budget, now, member)
              rcall('HSET', k.budget_cost, member, cost)
              budget_add(k, cost)
            end
            out[#out + 1] = id
            out[#out + 1] = encoded
            out[#out + 1] = datas[i] or false
            out[#out + 1] = token
          end
        end
        local begun = #stamps
        started = started + begun
        if begun > 0 then
          rcall('HSET', k.jobs, unpack(records))
          rcall('ZADD', k.active, unpack(deadlines))
          if rate_max > 0 then
            rcall('LPUSH', k.limiter, unpack(stamps))
            rcall('LTRIM', k.limiter, 0, rate_max - 1)
          end
          if s.rate_max > 0 then
            glog[#glog + 1] = now
            while #glog > s.rate_max do table.remove(glog, 1) end
            rcall('HSET', k.group_limiter, group, cjson.encode(glog))
          end
        end
        if begun < c then
          -- Waiting entries without their records (removed by hand): dropped, and their slots given back.
          local back = rcall('HINCRBY', k.group_active, group, begun - c)
          if back <= 0 then rcall('HDEL', k.group_active, group) end
        end
      end
    end
  end
  -- Nothing ready (no group in the ready set, room left): nothing else may start before a wake (an add, a freed
  -- slot) or the next change, so the worker is told how long that is, and the wake tokens pushed before this fetch
  -- are spent. With jobs started, that is status 7 (drained): the worker waits at once rather than fetch again to
  -- learn it.
  local nothing_ready = status == 1 and (started == 0 or started < want) and rcall('ZCARD', k.groups) == 0
  if nothing_ready then
    wait_ms = next_change_ms()
    rcall('DEL', k.wake)
  elseif status == 1 and started == 0 then
    -- The try cap ended the search with groups still ready (each blocked one tried has left the set):
    -- there may be work to start, so the worker is to fetch again at once rather than idle.
    wait_ms = 0
  end
  if started > 0 then
    status = nothing_ready and 7 or 0
  elseif status == 5 then
    local w = next_change_ms()
    if w >= 0 and (wait_ms < 0 or w < wait_ms) then wait_ms = w end
  end
  out[1] = status
  out[2] = wait_ms
  return out
end
