-- Take every GPU lease of one placement, or none.
-- KEYS[1..n]  ugro:lease:<node>:<index>   the GPUs of the placement
-- ARGV[1]     "<job_id>|<token>"           the holder
-- ARGV[2]     time to live, milliseconds
-- Returns 1 when all were free and are now held, 0 when any was taken.
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return 0
  end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return 1
