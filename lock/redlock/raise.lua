-- Raises the fencing counter KEYS[1] to ARGV[1] unless it is already there.
-- Returns the counter's value afterwards.
local token = tonumber(ARGV[1])
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c < token then
	redis.call('SET', KEYS[1], ARGV[1])
	return token
end
return c
