-- Shared head of the semaphore scripts. KEYS[1] is the holders (a sorted
-- set of owner by expiry in milliseconds of the server clock), KEYS[2] the
-- key's fields (limit; w:OWNER the weight of a holder; q:OWNER the expiry
-- of a waiter; seq the arrival counter), KEYS[3] the queue of waiters (a
-- sorted set of owner by arrival), KEYS[4] the fencing counter, which
-- never expires. All four share a hash slot. Expired holders and waiters
-- are dropped by the next script that touches the key, and Redis deletes a
-- sorted set when its last member goes, so an idle key keeps only its
-- fields (limit and arrival counter) and its fencing counter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- purge drops expired holders and waiters.
local function purge()
	for _, o in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
		redis.call('ZREM', KEYS[1], o)
		redis.call('HDEL', KEYS[2], 'w:' .. o)
	end
	for _, o in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
		local e = tonumber(redis.call('HGET', KEYS[2], 'q:' .. o))
		if not e or e <= now then
			redis.call('ZREM', KEYS[3], o)
			redis.call('HDEL', KEYS[2], 'q:' .. o)
		end
	end
end

-- used sums the weights of the holders.
local function used()
	local n = 0
	for _, o in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
		n = n + tonumber(redis.call('HGET', KEYS[2], 'w:' .. o) or 0)
	end
	return n
end

-- limitOf checks limit against the key's, adopting it when the key is
-- idle; it returns the key's limit when they disagree, else nil.
local function limitOf(limit)
	if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[3]) == 0 then
		redis.call('HSET', KEYS[2], 'limit', limit)
		return nil
	end
	local have = tonumber(redis.call('HGET', KEYS[2], 'limit'))
	if have ~= limit then
		return have or -1
	end
	return nil
end

-- enqueue puts owner at the end of the queue until now + ttl.
local function enqueue(owner, ttl)
	if not redis.call('ZSCORE', KEYS[3], owner) then
		redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[2], 'seq', 1), owner)
	end
	redis.call('HSET', KEYS[2], 'q:' .. owner, now + ttl)
end
