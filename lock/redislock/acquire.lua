-- Takes KEYS[1] for owner ARGV[1] with a TTL of ARGV[2] milliseconds, the
-- way every Redis lock client does (SET NX PX), and on success increments the
-- fencing counter KEYS[2], which lives in the same hash slot, and writes the
-- holder record KEYS[5] ("owner token holder", holder ARGV[3]) with the same
-- TTL, for readers of the key's holder. While haita waiters queue for the key
-- (KEYS[3], a sorted set, and KEYS[4], their deadlines and TTLs) a free key
-- is theirs: the attempt reports it held.
-- Returns the new token (>= 1); when the key is held, -1 if it has no expiry
-- or waiters come first, otherwise -2 - its remaining milliseconds.
if redis.call('EXISTS', KEYS[3]) == 1 then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	while true do
		local m = redis.call('ZRANGE', KEYS[3], 0, 0)
		if #m == 0 then
			break
		end
		local v = redis.call('HGET', KEYS[4], m[1])
		local d = v and tonumber(string.match(v, '^(%d+) '))
		if d and d >= now then
			return -1
		end
		redis.call('ZREM', KEYS[3], m[1])
		redis.call('HDEL', KEYS[4], m[1])
	end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[5], ARGV[1] .. ' ' .. token .. ' ' .. (ARGV[3] or ''), 'PX', ARGV[2])
	return token
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl < 0 then
	return -1
end
return -2 - pttl
