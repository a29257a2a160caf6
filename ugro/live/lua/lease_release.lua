-- Release the leases a holder has; another holder's lease is left alone.
-- KEYS[1..n]  ugro:lease:<node>:<index>   the GPUs of the placement
-- ARGV[1]     "<job_id>|<token>"           the holder
-- Returns how many leases were released.
local released = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
return released
