-- Let go of the dispatch lock, unless a request arrived after the last pass.
-- KEYS[1]  ugro:dispatch:dirty   the request flag
-- KEYS[2]  ugro:dispatch:lock
-- ARGV[1]  the holder's token
-- ARGV[2]  the lock's time to live, milliseconds
-- Returns 1 when the holder must run another pass (the flag is set: it was
-- taken, and the lock renewed), 0 when the lock is released.
if redis.call('GETDEL', KEYS[1]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
return 0
