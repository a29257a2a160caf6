-- After a caller waited to be handed the dispatch lock (dispatch_enter.lua
-- returned its entry), woken or not: does it hold the lock now?
-- KEYS[1]  ugro:dispatch:dirty    the request flag
-- KEYS[2]  ugro:dispatch:lock
-- KEYS[3]  ugro:dispatch:waiting
-- ARGV[1]  the caller's token
-- ARGV[2]  its entry in the waiting list
-- ARGV[3]  the lock's time to live, milliseconds
-- Returns 1 when the caller holds the lock (handed over, or free and taken now)
-- and must run the pass; 0 when the holder will run it, asked by the request flag.
if redis.call('LREM', KEYS[3], 1, ARGV[2]) == 0 and redis.call('GET', KEYS[2]) == ARGV[1] then
  -- Handed over: the lock is the caller's, for a whole pass.
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
-- Not handed over in time: the lock is taken the ordinary way, or the request left.
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], 1)
return 0
