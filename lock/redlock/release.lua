-- Raises the fencing counter KEYS[2] to the lease's token ARGV[2] (a
-- write-back that keeps tokens increasing), takes owner ARGV[1] out of the
-- waiters' queue (KEYS[3], KEYS[4]; see acquire.lua) unless ARGV[4] is "1"
-- (a waiter giving back a split vote keeps its place), then deletes KEYS[1]
-- and its holder record KEYS[5] if ARGV[1] still holds it. Then, unless
-- ARGV[3] is empty, it publishes the first live waiter's owner on channel
-- ARGV[3]: only that waiter wakes.
-- Returns 1 when deleted, 0 when ARGV[1] did not hold the key.
local token = tonumber(ARGV[2])
if token > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') < token then
	redis.call('SET', KEYS[2], ARGV[2])
end
local queued = redis.call('EXISTS', KEYS[3]) == 1
if queued and ARGV[4] ~= '1' then
	redis.call('ZREM', KEYS[3], ARGV[1])
	redis.call('HDEL', KEYS[4], ARGV[1])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1], KEYS[5])
if queued and ARGV[3] ~= '' then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	while true do
		local m = redis.call('ZRANGE', KEYS[3], 0, 0)
		if #m == 0 then
			break
		end
		if tonumber(redis.call('HGET', KEYS[4], m[1]) or '0') >= now then
			redis.call('PUBLISH', ARGV[3], m[1])
			break
		end
		redis.call('ZREM', KEYS[3], m[1])
		redis.call('HDEL', KEYS[4], m[1])
	end
end
return 1
