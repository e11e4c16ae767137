-- Changes KEYS[1] only if it is in flight with owner ARGV[2] and token
-- ARGV[3]. ARGV[1] is the operation:
--   extend   ARGV[4] = lease ms
--   complete ARGV[4] = value, ARGV[5] = retention ms
--   release
-- Replies 1 if it changed the record, 0 if the claim is not held.
local r = redis.call('HMGET', KEYS[1], 'state', 'owner', 'token', 'keep')
if r[1] ~= 'inflight' or r[2] ~= ARGV[2] or r[3] ~= ARGV[3] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'extend' then
  local lease = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'until', now + lease)
  redis.call('PEXPIRE', KEYS[1], lease + tonumber(r[4]))
elseif ARGV[1] == 'complete' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'value', ARGV[4])
  redis.call('HDEL', KEYS[1], 'until')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
else
  redis.call('HSET', KEYS[1], 'until', 0)
end
return 1
