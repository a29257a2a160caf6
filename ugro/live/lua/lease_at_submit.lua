-- Take the GPU leases of a job being submitted, when nothing waits before it and
-- the live state is the one the caller planned on; all of them or none.
-- KEYS[1]       ugro:epoch                  the live state's id
-- KEYS[2]       ugro:pending                the pending queue
-- KEYS[3]       ugro:delayed                jobs waiting out a retry backoff
-- KEYS[4..3+n]  ugro:lease:<node>:<index>   the GPUs of the placement
-- KEYS[4+n..]   ugro:lease:<node>:<index>   every GPU the caller saw
-- ARGV[1]       "<job_id>|<token>"          the holder
-- ARGV[2]       time to live, milliseconds
-- ARGV[3]       now, unix seconds (a delayed job due by then waits too)
-- ARGV[4]       the epoch the caller planned on
-- ARGV[5]       n, the number of GPUs of the placement
-- ARGV[6]       commands to run once the leases are taken, a JSON list of lists of
--               strings ("" none): the placed job's live record and its message
-- Returns {1} when the leases are now held; {0, holder of each GPU seen (nil:
-- free)} when one was taken; {-1} when a job waits; {-2} when the epoch differs.
if redis.call('GET', KEYS[1]) ~= ARGV[4] then
  return {-2}
end
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[3]) > 0 then
  return {-1}
end
local n = tonumber(ARGV[5])
for i = 4, 3 + n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local seen = {0}
    for j = 4 + n, #KEYS do
      seen[#seen + 1] = redis.call('GET', KEYS[j])
    end
    return seen
  end
end
for i = 4, 3 + n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
if ARGV[6] ~= '' then
  for _, command in ipairs(cjson.decode(ARGV[6])) do
    redis.call(unpack(command))
  end
end
return {1}
