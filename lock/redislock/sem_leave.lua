-- Takes waiter ARGV[1] out of the queue, waking the others on channel
-- ARGV[2] when it was the first. Returns 1 when it was queued.
purge()
local rank = redis.call('ZRANK', KEYS[3], ARGV[1])
if not rank then
	return 0
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[2], 'q:' .. ARGV[1])
if rank == 0 and redis.call('ZCARD', KEYS[3]) > 0 then
	redis.call('PUBLISH', ARGV[2], '')
end
return 1
