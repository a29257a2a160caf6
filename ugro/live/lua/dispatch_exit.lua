-- Let go of the dispatch lock, unless a request arrived after the last pass; hand
-- it to the first caller still waiting for it (dispatch_enter.lua), if any.
-- KEYS[1]  ugro:dispatch:dirty    the request flag
-- KEYS[2]  ugro:dispatch:lock
-- KEYS[3]  ugro:dispatch:waiting  "<token> <deadline, unix ms>" of each waiting caller
-- ARGV[1]  the holder's token
-- ARGV[2]  the lock's time to live, milliseconds
-- ARGV[3]  the prefix of a waiting caller's wake-up list (its token follows)
-- ARGV[4]  the handed lock's time to live, milliseconds: a waiter that died
--          meanwhile blocks dispatch no longer
-- Returns 1 when the holder must run another pass (the flag is set: it was
-- taken, and the lock renewed), 0 when the lock is released or handed over.
if redis.call('GETDEL', KEYS[1]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
while true do
  local entry = redis.call('LPOP', KEYS[3])
  if not entry then
    break
  end
  local waiter, deadline = string.match(entry, '^(%S+) (%d+)$')
  -- One past its deadline has given up waiting (or died): it asks on its own.
  if waiter and tonumber(deadline) > now_ms then
    redis.call('SET', KEYS[2], waiter, 'PX', ARGV[4])
    local wake = ARGV[3] .. waiter
    redis.call('RPUSH', wake, 1)
    redis.call('PEXPIRE', wake, ARGV[4])
    return 0
  end
end
redis.call('DEL', KEYS[2])
return 0
