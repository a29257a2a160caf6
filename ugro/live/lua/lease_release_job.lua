-- Release whatever leases one job holds, whatever the token (cancel, reconcile).
-- KEYS[1..n]  ugro:lease:<node>:<index>   the GPUs the job was placed on
-- ARGV[1]     "<job_id>|"                  the prefix of the job's holder values
-- Returns how many leases were released.
local released = 0
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value and string.sub(value, 1, #ARGV[1]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    released = released + 1
  end
end
return released
