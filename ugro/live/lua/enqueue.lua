-- Put jobs in the pending queue (or, with a ready time, among the delayed jobs),
-- each with what placement needs to know, in submission order.
-- KEYS[1]     ugro:seq           the submission counter
-- KEYS[2]     ugro:pending       the pending queue
-- KEYS[3]     ugro:delayed       jobs waiting out a retry backoff
-- KEYS[4..]   ugro:job:<job_id>  one live hash per job
-- ARGV[1]     the priority weight of a pending score
-- ARGV[2]     the status events channel: the batch is announced there once, by its
--             first job ("<job_id> queued"), for those who show new jobs at once
-- ARGV[3..]   per job, 7 values: job_id, priority, gpus, node ("" any),
--             timeout ("" none), ready_at ("" now), nodes (a gang job's, else 1)
-- Returns the number of jobs queued.
local weight = tonumber(ARGV[1])
local n = #KEYS - 3
for i = 1, n do
  local a = 3 + (i - 1) * 7
  local job = KEYS[3 + i]
  redis.call('HSET', job, 'status', 'queued', 'priority', ARGV[a + 1], 'gpus', ARGV[a + 2],
    'node', ARGV[a + 3], 'timeout', ARGV[a + 4], 'nodes', ARGV[a + 6])
  redis.call('PERSIST', job)
  if ARGV[a + 5] == '' then
    local seq = redis.call('INCR', KEYS[1])
    -- %.0f: an exact integer score (tostring would round to 14 digits)
    redis.call('ZADD', KEYS[2], string.format('%.0f', -tonumber(ARGV[a + 1]) * weight + seq), ARGV[a])
  else
    redis.call('ZADD', KEYS[3], ARGV[a + 5], ARGV[a])
  end
end
if n > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' queued')
end
return n
