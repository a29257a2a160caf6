-- The head of the pending queue, with what placement needs of each job, in order.
-- KEYS[1]  ugro:pending
-- ARGV[1]  how many jobs (0: none)
-- ARGV[2]  the prefix of a job's live hash (ugro:job:)
-- Returns a flat list: job id, gpus, node, timeout, nodes, per job ("" when unset).
local n = tonumber(ARGV[1])
local found = {}
if n <= 0 then
  return found
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, n - 1)) do
  local fields = redis.call('HMGET', ARGV[2] .. id, 'gpus', 'node', 'timeout', 'nodes')
  found[#found + 1] = id
  for i = 1, 4 do
    found[#found + 1] = fields[i] or ''
  end
end
return found
