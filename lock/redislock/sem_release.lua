-- Frees the permit of owner ARGV[1] and wakes the waiters on channel
-- ARGV[2]. Returns 0, or -1 when the owner held no live permit (an expired
-- one is removed all the same).
local e = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not e then
	return -1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], 'w:' .. ARGV[1])
if redis.call('ZCARD', KEYS[3]) > 0 then
	redis.call('PUBLISH', ARGV[2], '')
end
if tonumber(e) <= now then
	return -1
end
return 0
