-- Ask for a dispatch pass and try to become the one who runs it; or, after a wait
-- to be handed the lock (ARGV[5]), find out whether it was. A GPU worker whose job
-- just ended (ARGV[6] set) first tries to take the head of the queue for its own
-- GPU, which is where a pass would place it (see ugro.dispatch.LocalSlot).
-- KEYS[1]  ugro:dispatch:dirty    the request flag
-- KEYS[2]  ugro:dispatch:lock     held by the caller that runs passes
-- KEYS[3]  ugro:pending           the pending queue
-- KEYS[4]  ugro:delayed           jobs waiting out a retry backoff
-- KEYS[5]  ugro:dispatch:waiting  callers waiting to be handed the lock
-- KEYS[6]  ugro:lease:<node>:<index>  the asking worker's GPU
-- KEYS[7]  ugro:workers           the live GPU workers
-- KEYS[8]  ugro:health:unhealthy  nodes dispatch must not use
-- ARGV[1]  the caller's token
-- ARGV[2]  the lock's time to live, milliseconds (a crashed holder blocks no longer)
-- ARGV[3]  now, unix seconds (a delayed job due by then counts as pending)
-- ARGV[4]  how long the caller waits to be handed the lock, milliseconds (0: it
--          does not wait, and leaves the request flag instead)
-- ARGV[5]  after such a wait, woken or not: the caller's entry in the waiting list
--          ("" otherwise)
-- ARGV[6]  the asking worker's node (absent: the caller is no GPU worker, and
--          KEYS[6..8] and ARGV[7..11] are absent too)
-- ARGV[7]  its GPU's field in the workers hash ("<node>:<index>")
-- ARGV[8]  the lease token a job taken for that GPU gets
-- ARGV[9]  that lease's time to live, milliseconds
-- ARGV[10] the prefix of a job's live hash (ugro:job:)
-- ARGV[11] how long (s) a worker's entry stays live without being refreshed
-- Returns {job id} when the head of the queue was taken for the asking worker's
-- GPU (out of the queue, its lease "<job id>|<ARGV[8]>"); 1 when the caller holds
-- the lock now and must run the pass; its entry in the waiting list when it is to
-- wait for the holder to hand the lock over (dispatch_exit.lua, then this script
-- again with the entry); 0 when another holder will see the request flag and run
-- it, or when no job waits at all (whoever queues one next asks for its own pass).
if ARGV[5] ~= '' and redis.call('LREM', KEYS[5], 1, ARGV[5]) == 0
    and redis.call('GET', KEYS[2]) == ARGV[1] then
  -- Handed over (its entry was taken off the list): the lock is the caller's, for
  -- a whole pass.
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
local due = redis.call('ZCOUNT', KEYS[4], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[3]) == 0 and due == 0 then
  return 0
end
-- The head of the queue for the asking worker's GPU, when a pass would put it
-- there: no pass runs (it plans on its own snapshot), no delayed job is due
-- (it may go first), the head wants one GPU and no other node, this GPU is free,
-- live and not blocked, and its node is healthy. A free GPU is the tightest fit a
-- one-GPU job can have, so a pass would place the head on it; it would place it
-- on another free GPU only at a tie, and then it costs nothing to have it here.
if ARGV[6] and ARGV[5] == '' and due == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  local job = redis.call('HMGET', ARGV[10] .. head, 'gpus', 'node')
  local gpus, node = job[1] or '', job[2] or ''
  if (gpus == '' or gpus == '1') and (node == '' or node == ARGV[6])
      and redis.call('EXISTS', KEYS[6]) == 0
      and redis.call('HEXISTS', KEYS[8], ARGV[6]) == 0 then
    local entry = redis.call('HGET', KEYS[7], ARGV[7])
    local info = entry and cjson.decode(entry)
    local blocked = info and info['blocked']
    if info and (blocked == nil or blocked == cjson.null or blocked == '')
        and tonumber(ARGV[3]) - tonumber(info['seen']) <= tonumber(ARGV[11]) then
      redis.call('ZREM', KEYS[3], head)
      redis.call('SET', KEYS[6], head .. '|' .. ARGV[8], 'PX', ARGV[9])
      return {head}
    end
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
local wait = tonumber(ARGV[4])
if wait > 0 then
  local now = redis.call('TIME')
  local deadline = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + wait
  local entry = ARGV[1] .. ' ' .. deadline
  redis.call('RPUSH', KEYS[5], entry)
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
  return entry
end
redis.call('SET', KEYS[1], 1)
return 0
