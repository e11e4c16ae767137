-- Takes KEYS[1] on one instance for owner ARGV[1] with a TTL of ARGV[2]
-- milliseconds (SET NX PX, as every Redlock client does), and on success
-- increments this instance's fencing counter KEYS[2] and writes the holder
-- record KEYS[5] ("owner token holder", holder ARGV[6], this instance's
-- token) with the same TTL, for readers of the key's holder.
--
-- Haita's waiters queue on each instance: KEYS[3] is a sorted set of owners
-- by arrival, KEYS[4] a hash of their deadlines (ms). While a live waiter
-- other than ARGV[1] is first, a free key is its turn and the attempt is
-- refused. With ARGV[3] = "1" the attempt is a waiting one: it joins the
-- queue at ARGV[5] (the clock of its request's first attempt in µs: the
-- same on every instance and in every round, so that the instances agree
-- on the order), or keeps its place, until ARGV[4] ms from now; where
-- nobody queues and it is granted, it does not queue. Granted, it keeps its
-- place until its release takes it out (release.lua), so that it is still
-- first here if the vote split and it gives the key back.
--
-- Returns {token} with the new token (>= 1) on success; when the key is
-- held, {-1, holder} if it has no expiry, otherwise {-2 - its remaining
-- milliseconds, holder}, where holder is the key's value; {-3, first} when
-- the key is free but it is waiter first's turn. In that case, unless
-- ARGV[7] is empty, it also publishes first on channel ARGV[7]: the
-- release that freed the key may have named another waiter, or nobody (a
-- split vote given back quietly, a waiter that left, a place that lapsed),
-- and first may be asleep until its poll.
local waiting = ARGV[3] == '1'
local function take()
	local token = redis.call('INCR', KEYS[2])
	redis.call('SET', KEYS[5], ARGV[1] .. ' ' .. token .. ' ' .. (ARGV[6] or ''), 'PX', ARGV[2])
	return {token}
end
local function held()
	local holder = redis.call('GET', KEYS[1]) or ''
	local pttl = redis.call('PTTL', KEYS[1])
	if pttl < 0 then
		return {-1, holder}
	end
	return {-2 - pttl, holder}
end
local function enqueue(now)
	redis.call('ZADD', KEYS[3], 'NX', ARGV[5], ARGV[1])
	redis.call('HSET', KEYS[4], ARGV[1], now + tonumber(ARGV[4]))
	if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then
		redis.call('PEXPIRE', KEYS[3], ARGV[4])
		redis.call('PEXPIRE', KEYS[4], ARGV[4])
	end
end
local function clock()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
if redis.call('EXISTS', KEYS[3]) == 0 then
	-- Nobody queues: the way every Redlock client takes a key.
	if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
		return take()
	end
	if waiting then
		enqueue(clock())
	end
	return held()
end
local now = clock()
if waiting then
	enqueue(now)
end
local first
while true do
	local m = redis.call('ZRANGE', KEYS[3], 0, 0)
	if #m == 0 then
		break
	end
	if tonumber(redis.call('HGET', KEYS[4], m[1]) or '0') >= now then
		first = m[1]
		break
	end
	redis.call('ZREM', KEYS[3], m[1])
	redis.call('HDEL', KEYS[4], m[1])
end
if first ~= nil and first ~= ARGV[1] then
	if redis.call('EXISTS', KEYS[1]) == 0 then
		if ARGV[7] and ARGV[7] ~= '' then
			redis.call('PUBLISH', ARGV[7], first)
		end
		return {-3, first}
	end
	return held()
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	-- A waiting attempt keeps its place: if the vote splits and it gives
	-- the key back, it is still first here. Its release (release.lua)
	-- takes it out of the queue.
	if not waiting then
		redis.call('ZREM', KEYS[3], ARGV[1])
		redis.call('HDEL', KEYS[4], ARGV[1])
	end
	return take()
end
return held()
