-- Takes KEYS[1] for owner ARGV[1] with a TTL of ARGV[2] milliseconds, the
-- way every Redis lock client does (SET NX PX), and on success increments the
-- fencing counter KEYS[2], which lives in the same hash slot.
-- Returns the new token (>= 1); when the key is held, -1 if it has no expiry,
-- otherwise -2 - its remaining milliseconds.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return redis.call('INCR', KEYS[2])
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
	return -1
end
return -2 - pttl
