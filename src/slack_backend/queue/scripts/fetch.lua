-- fetch: start up to N jobs for one worker: due delayed -> waiting, then the limits, then fair pick and lease.
-- KEYS: the queue's key set (QueueKeys order, bound as `k` by the loader)
-- ARGV[1] worker id (a lease token is worker_id:seq:starts)
-- ARGV[2] lease length ms
-- ARGV[3] most jobs to start
-- ARGV[4] request id ('' = none): the same id re-sent after a lost reply gets the same jobs back; ids grow (fixed
--   width), and one older than the worker's last is a stale send that starts nothing (status 1)
-- Order of checks: paused, queue hold (upstream Retry-After), global rate limit, global concurrency cap,
-- then per group: rate limit (group set aside until due), concurrency cap (group set aside until a slot frees),
-- then the token budget for the job about to start (its `cost` is reserved in the sliding window).
-- Returns: {status, wait_ms, id1, rec1, data1, token1, id2, ...}
--   status 0 started jobs | 1 nothing waiting | 2 rate limited | 3 paused | 4 held | 5 at global concurrency cap
--   | 6 token budget spent until the window frees room | 7 started jobs, and none other can start now (drained)
--   wait_ms: how long until something may change (next due delayed job, limiter slot, hold end); -1 = unknown;
--   with status 7 as with status 1: the worker waits for a wake, or for that long, before it fetches again
--   0 with status 1: the fetch stopped after its tries with groups still ready, so fetch again at once
-- Events: none (a start is visible in the active set); a fetch that finds nothing clears stale wake tokens.
-- Jobs of one group start in blocks: as many as its place in the fair order, the limits and the caps allow
-- are taken with one command per kind (ZREM, HMGET, HSET, ZADD) rather than one round of commands per job.
--@include _common.lua
--@include _fetch.lua
local req = ARGV[4] or ''
local replay = fetch_replay(k, ARGV[1], req)
if replay then return replay end
local out = fetch_jobs(k, now_ms(), ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
fetch_remember(k, ARGV[1], req, out)
return out
