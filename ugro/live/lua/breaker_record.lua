-- Record one health check of a node in its circuit breaker, atomically, so that
-- concurrent sweeps count every check once and only one of them closes or
-- reopens a breaker whose window has passed.
-- KEYS[1]  ugro:breaker:<node>   hash {state, failures, opened_at}
-- ARGV[1]  1 when the check passed, 0 when it failed
-- ARGV[2]  now, unix seconds
-- ARGV[3]  failures in a row that open the breaker
-- ARGV[4]  how long it stays open, seconds
-- Returns {state, failures, change, opened_at}: change is "opened", "closed", "reopened"
-- or "" when the state did not change. A check that lands while the breaker is
-- open and its window has not passed changes nothing.
local ok = ARGV[1] == '1'
local now = tonumber(ARGV[2])
local threshold = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local opened_at = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')

if state == 'open' then
  if now - opened_at < window then
    return {state, failures, '', tostring(opened_at)}
  end
  -- The window has passed: this check is the half-open probe and decides.
  if ok then
    redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'opened_at', 0)
    return {'closed', 0, 'closed', '0'}
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'failures', failures + 1, 'opened_at', now)
  return {'open', failures + 1, 'reopened', ARGV[2]}
end

if ok then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
  return {'closed', 0, '', '0'}
end
failures = failures + 1
if failures >= threshold then
  redis.call('HSET', KEYS[1], 'state', 'open', 'failures', failures, 'opened_at', now)
  return {'open', failures, 'opened', ARGV[2]}
end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', failures)
return {'closed', failures, '', '0'}
