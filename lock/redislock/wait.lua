-- One step of a waiting acquire by owner ARGV[1] with a TTL of ARGV[2]
-- milliseconds, for holder ARGV[3]. KEYS: the lock key, the fencing counter,
-- the queue (a sorted set of owners by arrival), the waiters' hash (owner ->
-- "deadline ttl holder" while queued, "g token" once a release handed the key
-- over and wrote its holder record) and the key's holder record ("owner
-- token holder", living as long as the lease).
-- Returns {token, pttl} when the owner holds the key now (taken here, with
-- its holder record, or handed over by a release); otherwise it queues the
-- owner, or keeps its place with a deadline ARGV[2] milliseconds from now,
-- and returns {0, pttl} with the key's remaining milliseconds (-1: no
-- expiry), or {0, -2} when the key is free but an earlier waiter has the
-- next turn.
local owner, ttl, holder = ARGV[1], tonumber(ARGV[2]), ARGV[3] or ''
local function take()
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[5], owner .. ' ' .. token .. ' ' .. holder, 'PX', ttl)
	return {token, ttl}
end
if redis.call('EXISTS', KEYS[3], KEYS[4]) == 0 then
	-- Nobody queues: the way every Redis lock client takes a key.
	if redis.call('SET', KEYS[1], owner, 'NX', 'PX', ttl) then
		return take()
	end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HGET', KEYS[4], owner)
if v and string.sub(v, 1, 2) == 'g ' then
	redis.call('HDEL', KEYS[4], owner)
	if redis.call('GET', KEYS[1]) == owner then
		return {tonumber(string.sub(v, 3)), redis.call('PTTL', KEYS[1])}
	end
	v = nil -- handed over and expired unseen: queue again
end
local first
while true do
	local m = redis.call('ZRANGE', KEYS[3], 0, 0)
	if #m == 0 then
		break
	end
	local w = redis.call('HGET', KEYS[4], m[1])
	local d = w and tonumber(string.match(w, '^(%d+) '))
	if d and d >= now then
		first = m[1]
		break
	end
	redis.call('ZREM', KEYS[3], m[1])
	redis.call('HDEL', KEYS[4], m[1])
end
if (first == nil or first == owner) and redis.call('SET', KEYS[1], owner, 'NX', 'PX', ttl) then
	redis.call('ZREM', KEYS[3], owner)
	redis.call('HDEL', KEYS[4], owner)
	return take()
end
redis.call('ZADD', KEYS[3], 'NX', tonumber(t[1]) * 1000000 + tonumber(t[2]), owner)
redis.call('HSET', KEYS[4], owner, (now + ttl) .. ' ' .. ttl .. ' ' .. holder)
if redis.call('PTTL', KEYS[3]) < ttl then
	redis.call('PEXPIRE', KEYS[3], ttl)
end
if redis.call('PTTL', KEYS[4]) < ttl then
	redis.call('PEXPIRE', KEYS[4], ttl)
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then
	return {0, -2}
end
return {0, pttl}
