-- Extends the permit of owner ARGV[1] to ARGV[2] milliseconds. Returns 1,
-- or 0 when the owner holds no live permit.
local e = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not e or tonumber(e) <= now then
	return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
