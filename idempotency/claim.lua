-- Claims KEYS[1] for an owner, or reports the record.
-- ARGV: fingerprint, owner, lease ms, retention ms.
-- Replies {"claimed", token} | {"inflight", fingerprint, token, ms left} |
-- {"done", fingerprint, token, value}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local r = redis.call('HMGET', KEYS[1], 'fp', 'state', 'token', 'until')
if r[1] then
  if r[2] == 'done' then
    return {'done', r[1], r[3], redis.call('HGET', KEYS[1], 'value')}
  end
  local left = tonumber(r[4]) - now
  if r[1] ~= ARGV[1] or left > 0 then
    return {'inflight', r[1], r[3], left}
  end
end
local token = 1
if r[3] then
  token = tonumber(r[3]) + 1
end
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'inflight', 'token', token,
  'owner', ARGV[2], 'until', now + lease, 'keep', keep)
redis.call('HDEL', KEYS[1], 'value')
redis.call('PEXPIRE', KEYS[1], lease + keep)
return {'claimed', tostring(token)}
