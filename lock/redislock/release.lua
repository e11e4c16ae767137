-- Releases KEYS[1] if owner ARGV[1] still holds it. With ARGV[3] empty it
-- deletes the key and publishes on channel ARGV[2], waking waiters; returns 0.
-- With ARGV[3] set it hands the key straight to that owner with a TTL of
-- ARGV[4] milliseconds and returns the new owner's token from the fencing
-- counter KEYS[2]. Returns -1 when ARGV[1] does not hold the key.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return -1
end
if ARGV[3] ~= '' then
	redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
	return redis.call('INCR', KEYS[2])
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '')
return 0
