-- Take the GPU leases of a job being submitted, when nothing waits before it and
-- the live GPUs are as the caller planned on them; all of them or none. The plan
-- is what a pass would choose (ugro.scheduling.submit_lease): the same live state
-- (epoch), the same workers (as many fields in the workers hash) and every GPU
-- the caller saw leased or free as it saw it, so that none freed since would have
-- been the tighter fit.
-- KEYS[1]       ugro:epoch                  the live state's id
-- KEYS[2]       ugro:pending                the pending queue
-- KEYS[3]       ugro:delayed                jobs waiting out a retry backoff
-- KEYS[4]       ugro:workers                the live GPU workers
-- KEYS[5..4+n]  ugro:lease:<node>:<index>   the GPUs of the placement
-- KEYS[5+n..]   ugro:lease:<node>:<index>   every GPU the caller saw
-- ARGV[1]       "<job_id>|<token>"          the holder
-- ARGV[2]       time to live, milliseconds
-- ARGV[3]       the epoch the caller planned on
-- ARGV[4]       n, the number of GPUs of the placement
-- ARGV[5]       commands to run once the leases are taken, a JSON list of lists of
--               strings ("" none): the placed job's live record and its message
-- ARGV[6]       the number of fields of the workers hash the caller saw
-- ARGV[7]       for each GPU the caller saw, in order, "1" when it saw it leased,
--               "0" when free
-- A delayed job due by now, by Redis's clock (every host's due times are on it:
-- ugro.live.clock), waits too.
-- Returns {1} when the leases are now held; {0, holder of each GPU seen (nil:
-- free)} when a GPU seen is not as seen (a GPU of the placement taken, or any
-- other taken or freed); {-1} when a job waits; {-2} when the epoch or the
-- workers differ.
if redis.call('GET', KEYS[1]) ~= ARGV[3] or redis.call('HLEN', KEYS[4]) ~= tonumber(ARGV[6]) then
  return {-2}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCOUNT', KEYS[3], '-inf', now) > 0 then
  return {-1}
end
local n = tonumber(ARGV[4])
local same = true
for i = 5, 4 + n do
  same = same and redis.call('EXISTS', KEYS[i]) == 0
end
local holders = {0}
for j = 5 + n, #KEYS do
  local holder = redis.call('GET', KEYS[j])
  holders[#holders + 1] = holder
  local seen_leased = string.sub(ARGV[7], j - 4 - n, j - 4 - n) == '1'
  same = same and (holder ~= false) == seen_leased
end
if not same then
  return holders
end
for i = 5, 4 + n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
if ARGV[5] ~= '' then
  for _, command in ipairs(cjson.decode(ARGV[5])) do
    redis.call(unpack(command))
  end
end
return {1}
