-- Takes KEYS[1] on one instance for owner ARGV[1] with a TTL of ARGV[2]
-- milliseconds (SET NX PX, as every Redlock client does), and on success
-- increments this instance's fencing counter KEYS[2].
-- Returns {token} with the new token (>= 1); when the key is held, {-1,
-- holder} if it has no expiry, otherwise {-2 - its remaining milliseconds,
-- holder}, where holder is the key's value.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return {redis.call('INCR', KEYS[2])}
end
local holder = redis.call('GET', KEYS[1]) or ''
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
	return {-1, holder}
end
return {-2 - pttl, holder}
