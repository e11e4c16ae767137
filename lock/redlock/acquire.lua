-- Takes KEYS[1] on one instance for owner ARGV[1] with a TTL of ARGV[2]
-- milliseconds (SET NX PX, as every Redlock client does), and on success
-- increments this instance's fencing counter KEYS[2] and writes the holder
-- record KEYS[3] ("owner token holder", holder ARGV[3], this instance's
-- token) with the same TTL, for readers of the key's holder.
-- Returns the new token (>= 1); when the key is held, -1 if it has no expiry,
-- otherwise -2 - its remaining milliseconds.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[3], ARGV[1] .. ' ' .. token .. ' ' .. (ARGV[3] or ''), 'PX', ARGV[2])
	return token
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
	return -1
end
return -2 - pttl
