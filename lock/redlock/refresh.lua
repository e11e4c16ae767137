-- Extends KEYS[1], and its holder record KEYS[2], to ARGV[2] milliseconds if
-- owner ARGV[1] still holds it.
-- Returns 1 when extended, 0 when the key is no longer held by ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('PEXPIRE', KEYS[2], ARGV[2])
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
