-- Queues owner ARGV[1] as a waiter of a key with limit ARGV[3], its place
-- kept for ARGV[2] milliseconds unless it tries again. Returns {0, 0}, or
-- {2, the key's limit} when the key is in use with another limit.
purge()
local have = limitOf(tonumber(ARGV[3]))
if have then
	return {2, have}
end
enqueue(ARGV[1], tonumber(ARGV[2]))
return {0, 0}
