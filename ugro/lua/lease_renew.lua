-- Extend the leases a holder still has.
-- KEYS[1..n]  ugro:lease:<node>:<index>   the GPUs of the placement
-- ARGV[1]     "<job_id>|<token>"           the holder
-- ARGV[2]     time to live, milliseconds
-- Returns how many of the leases the holder still had (and now renewed); fewer
-- than #KEYS means the holder lost a lease and must stop (fence itself).
local held = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    held = held + 1
  end
end
return held
