-- Takes owner ARGV[1] out of the waiters' queue (KEYS[1], KEYS[2]; see
-- acquire.lua): it stopped waiting. If it was the first live waiter, the
-- key KEYS[3] is free and ARGV[2] is not empty, it publishes the next live
-- waiter on channel ARGV[2]: a release may have named the owner that is
-- leaving, and the next one would sleep until its poll. Returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- first returns the first live waiter, dropping lapsed ones, or nil.
local function first()
	while true do
		local m = redis.call('ZRANGE', KEYS[1], 0, 0)
		if #m == 0 then
			return nil
		end
		if tonumber(redis.call('HGET', KEYS[2], m[1]) or '0') >= now then
			return m[1]
		end
		redis.call('ZREM', KEYS[1], m[1])
		redis.call('HDEL', KEYS[2], m[1])
	end
end
local was = ARGV[2] ~= nil and ARGV[2] ~= '' and first() == ARGV[1]
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if was and redis.call('EXISTS', KEYS[3]) == 0 then
	local waiter = first()
	if waiter ~= nil then
		redis.call('PUBLISH', ARGV[2], waiter)
	end
end
return 1
