-- Ask for a dispatch pass and try to become the one who runs it.
-- KEYS[1]  ugro:dispatch:dirty   the request flag
-- KEYS[2]  ugro:dispatch:lock    held by the caller that runs passes
-- ARGV[1]  the caller's token
-- ARGV[2]  the lock's time to live, milliseconds (a crashed holder blocks no longer)
-- Returns 1 when the caller holds the lock now; 0 when another holder will see
-- the request flag and run the pass.
redis.call('SET', KEYS[1], 1)
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
