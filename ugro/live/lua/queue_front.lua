-- Move a pending job to the front of its priority band, or, with ARGV[3], just
-- behind that job when it is queued in the same band: its score becomes the
-- midpoint between what is to precede it and the first other job after that.
-- A score is -priority * weight + sequence, the sequence in (0, weight).
-- KEYS[1] pending (sorted set)
-- ARGV[1] the job, ARGV[2] the priority weight, ARGV[3] the job to follow, or ""
-- Returns 1 when the job was moved, 0 when it is not pending.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
score = tonumber(score)
local weight = tonumber(ARGV[2])
local band = math.floor(score / weight)
local low = band * weight
if ARGV[3] ~= '' then
  local after = redis.call('ZSCORE', KEYS[1], ARGV[3])
  if after and math.floor(tonumber(after) / weight) == band then
    low = tonumber(after)
  end
end
if score <= low then
  return 0  -- already before the job it was to follow
end
local high = score
local next = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.17g', low), '+inf',
  'WITHSCORES', 'LIMIT', 0, 2)
for i = 1, #next, 2 do
  if next[i] ~= ARGV[1] then
    high = math.min(high, tonumber(next[i + 1]))
    break
  end
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.17g', (low + high) / 2), ARGV[1])
return 1
