-- Ask for a dispatch pass and try to become the one who runs it; or, after a wait
-- to be handed the lock (ARGV[4]), find out whether it was. A GPU worker whose job
-- just ended (ARGV[5] set) first takes the head of the queue for its own GPU when
-- that GPU is exactly where a pass would place it (see head_for_gpu below, and
-- ugro.scheduling.dispatch.WorkerGpu).
-- KEYS[1]  ugro:dispatch:dirty    the request flag
-- KEYS[2]  ugro:dispatch:lock     held by the caller that runs passes
-- KEYS[3]  ugro:pending           the pending queue
-- KEYS[4]  ugro:delayed           jobs waiting out a retry backoff
-- KEYS[5]  ugro:dispatch:waiting  callers waiting to be handed the lock
-- KEYS[6]  ugro:lease:<node>:<index>  the asking worker's GPU
-- KEYS[7]  ugro:workers           the live GPU workers
-- KEYS[8]  ugro:health:unhealthy  nodes dispatch must not use
-- Also read, by names built from ARGV: each candidate GPU's lease
-- (ARGV[11] .. its field in KEYS[7]) and the head's live hash (ARGV[9] .. id).
-- ARGV[1]  the caller's token
-- ARGV[2]  the lock's time to live, milliseconds (a crashed holder blocks no longer)
-- ARGV[3]  how long the caller waits to be handed the lock, milliseconds (0: it
--          does not wait, and leaves the request flag instead)
-- ARGV[4]  after such a wait, woken or not: the caller's entry in the waiting list
--          ("" otherwise)
-- ARGV[5]  the asking worker's node (absent: the caller is no GPU worker, and
--          KEYS[6..8] and ARGV[6..12] are absent too)
-- ARGV[6]  its GPU's field in the workers hash ("<node>:<index>")
-- ARGV[7]  the lease token a job taken for that GPU gets
-- ARGV[8]  that lease's time to live, milliseconds
-- ARGV[9]  the prefix of a job's live hash (ugro:job:)
-- ARGV[10] how long (s) a worker's entry stays live without being refreshed
-- ARGV[11] the prefix of a GPU's lease key (ugro:lease:)
-- ARGV[12] "1" when the head may be taken for that GPU; "0" when only a pass may
--          place (a user or group has a GPU quota, which this script cannot see)
-- Now is Redis's clock, the one every worker's announcement and every retry's due
-- time is on (ugro.live.clock): hosts' own clocks may be minutes apart.
-- Returns {job id} when the head of the queue was taken for the asking worker's
-- GPU (out of the queue, its lease "<job id>|<ARGV[7]>"); 1 when the caller holds
-- the lock now and must run the pass; its entry in the waiting list when it is to
-- wait for the holder to hand the lock over (dispatch_exit.lua, then this script
-- again with the entry); 0 when another holder will see the request flag and run
-- it, or when no job waits at all (whoever queues one next asks for its own pass).

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

-- Whether a sorts before b as Python sorts str, byte by byte (Lua's own comparison
-- of strings follows the server's locale).
local function sorts_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

-- Whether a pass sees free the GPU of a workers-hash field and its entry: its
-- lease free, its worker seen within ARGV[10] s and not blocked (its node's health
-- is the caller's to check).
local function seen_free(field, entry)
  if redis.call('EXISTS', ARGV[11] .. field) == 1 then
    return false
  end
  local info = cjson.decode(entry)
  local blocked = info['blocked']
  return (blocked == nil or blocked == cjson.null or blocked == '')
    and now - tonumber(info['seen']) <= tonumber(ARGV[10])
end

-- The head of the queue when a pass would place it on the asking worker's GPU as
-- its first placement, else nil. A pass (ugro.scheduling.placement.plan_placements)
-- puts a job that fits on the node with the fewest free GPUs that hold it (at a
-- tie, the node whose name sorts first), on that node's lowest free indices. So
-- the head goes here when it wants one GPU, may run on this node, and, among the
-- GPUs a pass sees free (on healthy nodes it may run on), this node has the fewest
-- (none ties with it that sorts first) and this GPU the lowest index of its node.
-- Only while no pass runs (it plans on its own snapshot); the caller checks that
-- no delayed job is due (one might go first). Anything else is left to a pass:
-- tests/integration/test_scheduling_equivalence.py holds this to plan_placements.
local function head_for_gpu()
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return nil
  end
  local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not head then
    return nil
  end
  local job = redis.call('HMGET', ARGV[9] .. head, 'gpus', 'node', 'nodes')
  local gpus, wanted, nodes = job[1] or '', job[2] or '', job[3] or ''
  -- (a gang job, of several nodes, is placed by a pass)
  if (gpus ~= '' and gpus ~= '1') or (wanted ~= '' and wanted ~= ARGV[5])
      or (nodes ~= '' and nodes ~= '1') then
    return nil
  end
  local own_index = tonumber(string.match(ARGV[6], ':(%d+)$'))
  local free, healthy, own_free = {}, {}, false
  local entries = redis.call('HGETALL', KEYS[7])
  for i = 1, #entries, 2 do
    local field = entries[i]
    local node, index = string.match(field, '^(.*):(%d+)$')
    if node and (wanted == '' or node == wanted) then
      if healthy[node] == nil then
        healthy[node] = redis.call('HEXISTS', KEYS[8], node) == 0
      end
      if healthy[node] and seen_free(field, entries[i + 1]) then
        free[node] = (free[node] or 0) + 1
        if node == ARGV[5] then
          index = tonumber(index)
          if index < own_index then
            return nil
          end
          own_free = own_free or index == own_index
        end
      end
    end
  end
  if not own_free then
    return nil
  end
  local count = free[ARGV[5]]
  for node, n in pairs(free) do
    if n < count or (n == count and node ~= ARGV[5] and sorts_before(node, ARGV[5])) then
      return nil
    end
  end
  return head
end

if ARGV[4] ~= '' and redis.call('LREM', KEYS[5], 1, ARGV[4]) == 0
    and redis.call('GET', KEYS[2]) == ARGV[1] then
  -- Handed over (its entry was taken off the list): the lock is the caller's, for
  -- a whole pass.
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
local due = redis.call('ZCOUNT', KEYS[4], '-inf', now)
if redis.call('ZCARD', KEYS[3]) == 0 and due == 0 then
  return 0
end
if ARGV[5] and ARGV[4] == '' and due == 0 and ARGV[12] == '1' then
  local head = head_for_gpu()
  if head then
    redis.call('ZREM', KEYS[3], head)
    redis.call('SET', KEYS[6], head .. '|' .. ARGV[7], 'PX', ARGV[8])
    return {head}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[1])
  return 1
end
local wait = tonumber(ARGV[3])
if wait > 0 then
  local deadline = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + wait
  local entry = ARGV[1] .. ' ' .. deadline
  redis.call('RPUSH', KEYS[5], entry)
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
  return entry
end
redis.call('SET', KEYS[1], 1)
return 0
