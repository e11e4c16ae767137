-- Releases KEYS[1] if owner ARGV[1] still holds it, and takes ARGV[1] out of
-- the queue of waiters (KEYS[3], KEYS[4]; see wait.lua) in any case, so that
-- it also serves a waiter that gives up. When live waiters queue, it hands
-- the key to the first of them with that waiter's TTL and a new token from
-- the fencing counter KEYS[2], writes that waiter's holder record KEYS[5]
-- ("owner token holder", with the same TTL), records the grant in the
-- waiters' hash and publishes "owner token" on channel ARGV[2]; returns
-- {token, owner}. Otherwise it deletes the key and its holder record,
-- publishes an empty message on ARGV[2] for readers of the key's holder
-- (waiters ignore it) and returns {0}. With ARGV[3] set it hands the key
-- instead to that owner, a waiter of the releasing Locker, with a TTL of
-- ARGV[4] ms, writes its holder record (holder ARGV[5]), takes it out of the
-- queue and returns {token, owner} without publishing. Returns {-1} when
-- ARGV[1] does not hold the key.
local queued = redis.call('EXISTS', KEYS[4]) == 1
if queued then
	redis.call('ZREM', KEYS[3], ARGV[1])
	redis.call('HDEL', KEYS[4], ARGV[1])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return {-1}
end
if ARGV[3] ~= '' then
	redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
	if queued then
		redis.call('ZREM', KEYS[3], ARGV[3])
		redis.call('HDEL', KEYS[4], ARGV[3])
	end
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[5], ARGV[3] .. ' ' .. token .. ' ' .. (ARGV[5] or ''), 'PX', ARGV[4])
	return {token, ARGV[3]}
end
if queued then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	while true do
		local m = redis.call('ZPOPMIN', KEYS[3])
		if #m == 0 then
			break
		end
		local w = redis.call('HGET', KEYS[4], m[1])
		if w then
			local deadline, ttl, holder = string.match(w, '^(%d+) (%d+) ?(.*)$')
			if deadline and tonumber(deadline) >= now then
				redis.call('SET', KEYS[1], m[1], 'PX', ttl)
				local token = redis.call('INCR', KEYS[2])
				redis.call('SET', KEYS[5], m[1] .. ' ' .. token .. ' ' .. holder, 'PX', ttl)
				redis.call('HSET', KEYS[4], m[1], 'g ' .. token)
				redis.call('PUBLISH', ARGV[2], m[1] .. ' ' .. token)
				return {token, m[1]}
			end
			redis.call('HDEL', KEYS[4], m[1])
		end
	end
end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('PUBLISH', ARGV[2], '')
return {0}
