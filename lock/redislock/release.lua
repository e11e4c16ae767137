-- Releases KEYS[1] if owner ARGV[1] still holds it. With ARGV[3] empty it
-- deletes the key and its holder record KEYS[3] and publishes on channel
-- ARGV[2], waking waiters; returns 0. With ARGV[3] set it hands the key
-- straight to that owner with a TTL of ARGV[4] milliseconds, writes its
-- holder record (holder ARGV[5]) and returns the new owner's token from the
-- fencing counter KEYS[2]. Returns -1 when ARGV[1] does not hold the key.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return -1
end
if ARGV[3] ~= '' then
	redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[3], ARGV[3] .. ' ' .. token .. ' ' .. (ARGV[5] or ''), 'PX', ARGV[4])
	return token
end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', ARGV[2], '')
return 0
