-- Takes ARGV[4] of the ARGV[3] permits of a key for owner ARGV[1] with a
-- TTL of ARGV[2] milliseconds. Only the first waiter of the queue, or
-- anyone when nobody waits, may take permits. ARGV[5] is '1' when the owner
-- waits (it is queued again at the end if its place expired); ARGV[6] is
-- the channel that wakes waiters when permits are left after a grant.
-- Returns {1, token}; {0, milliseconds until the first holder expires} when
-- there is no room or it is not the owner's turn; {2, the key's limit} when
-- the key is in use with another limit.
purge()
local owner, ttl, limit, weight = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local have = limitOf(limit)
if have then
	return {2, have}
end
if ARGV[5] == '1' then
	enqueue(owner, ttl)
end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
local inq = redis.call('ZSCORE', KEYS[3], owner)
local n = used()
if (head == nil or head == owner) and n + weight <= limit then
	if inq then
		redis.call('ZREM', KEYS[3], owner)
		redis.call('HDEL', KEYS[2], 'q:' .. owner)
	end
	redis.call('ZADD', KEYS[1], now + ttl, owner)
	redis.call('HSET', KEYS[2], 'w:' .. owner, weight)
	local tok = redis.call('INCR', KEYS[4])
	if n + weight < limit and redis.call('ZCARD', KEYS[3]) > 0 then
		redis.call('PUBLISH', ARGV[6], '')
	end
	return {1, tok}
end
if inq then
	redis.call('HSET', KEYS[2], 'q:' .. owner, now + ttl)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then
	return {0, tonumber(first[2]) - now}
end
return {0, -1}
