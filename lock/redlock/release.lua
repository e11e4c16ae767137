-- Raises the fencing counter KEYS[2] to the lease's token ARGV[2] (a
-- write-back that keeps tokens increasing), then deletes KEYS[1] if owner
-- ARGV[1] still holds it, and then publishes on channel ARGV[3] (unless it
-- is empty) to wake waiters. Returns 1 when deleted, 0 when ARGV[1] did not hold the key.
local token = tonumber(ARGV[2])
if token > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') < token then
	redis.call('SET', KEYS[2], ARGV[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	if ARGV[3] ~= '' then
		redis.call('PUBLISH', ARGV[3], '')
	end
	return 1
end
return 0
