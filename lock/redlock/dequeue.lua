-- Takes owner ARGV[1] out of the waiters' queue (KEYS[1], KEYS[2]; see
-- acquire.lua): it stopped waiting. Returns 1.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
