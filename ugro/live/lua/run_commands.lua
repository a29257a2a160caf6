-- Run commands in order, as one step; the first that fails stops the rest, where a
-- MULTI would run the ones after it all the same (a job's message must not go out
-- when its live record could not be written).
-- ARGV[1]  the commands: a JSON list of lists of strings (ugro.live.CommandList)
for _, command in ipairs(cjson.decode(ARGV[1])) do
  redis.call(unpack(command))
end
return 1
