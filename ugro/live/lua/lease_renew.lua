-- Extend the leases a holder still has, and re-take any that vanished (a Redis
-- wipe) unless the attempt was declared lost since.
-- KEYS[1..n]  ugro:lease:<node>:<index>   the GPUs of the placement
-- KEYS[n+1]   ugro:fence:<job_id>          highest attempt declared lost
-- ARGV[1]     "<job_id>|<token>"           the holder
-- ARGV[2]     time to live, milliseconds
-- ARGV[3]     the holder's attempt; 0 = renew only, never re-take (at claim time)
-- Returns how many of the n leases the holder now has, or -1 when fenced; fewer
-- than n means the holder lost a lease and must stop its job.
local n = #KEYS - 1
local attempt = tonumber(ARGV[3])
local fenced = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if attempt > 0 and fenced >= attempt then
  return -1
end
local held = 0
for i = 1, n do
  local value = redis.call('GET', KEYS[i])
  if value == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held = held + 1
  elseif value == false and attempt > 0 then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    held = held + 1
  end
end
return held
