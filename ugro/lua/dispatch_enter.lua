-- Ask for a dispatch pass and try to become the one who runs it; or, after a wait
-- to be handed the lock (ARGV[5]), find out whether it was.
-- KEYS[1]  ugro:dispatch:dirty    the request flag
-- KEYS[2]  ugro:dispatch:lock     held by the caller that runs passes
-- KEYS[3]  ugro:pending           the pending queue
-- KEYS[4]  ugro:delayed           jobs waiting out a retry backoff
-- KEYS[5]  ugro:dispatch:waiting  callers waiting to be handed the lock
-- ARGV[1]  the caller's token
-- ARGV[2]  the lock's time to live, milliseconds (a crashed holder blocks no longer)
-- ARGV[3]  now, unix seconds (a delayed job due by then counts as pending)
-- ARGV[4]  how long the caller waits to be handed the lock, milliseconds (0: it
--          does not wait, and leaves the request flag instead)
-- ARGV[5]  after such a wait, woken or not: the caller's entry in the waiting list
--          ("" otherwise)
-- Returns 1 when the caller holds the lock now and must run the pass; its entry
-- in the waiting list when it is to wait for the holder to hand the lock over
-- (dispatch_exit.lua, then this script again with the entry); 0 when another
-- holder will see the request flag and run it, or when no job waits at all
-- (whoever queues one next asks for its own pass).
if ARGV[5] ~= '' and redis.call('LREM', KEYS[5], 1, ARGV[5]) == 0
    and redis.call('GET', KEYS[2]) == ARGV[1] then
  -- Handed over (its entry was taken off the list): the lock is the caller's, for
  -- a whole pass.
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if redis.call('ZCARD', KEYS[3]) == 0 and redis.call('ZCOUNT', KEYS[4], '-inf', ARGV[3]) == 0 then
  return 0
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
local wait = tonumber(ARGV[4])
if wait > 0 then
  local now = redis.call('TIME')
  local deadline = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + wait
  local entry = ARGV[1] .. ' ' .. deadline
  redis.call('RPUSH', KEYS[5], entry)
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
  return entry
end
redis.call('SET', KEYS[1], 1)
return 0
