-- Reads the holder of KEYS[1]: its owner value, its remaining milliseconds
-- and the holder record KEYS[2] ("owner token holder", or '' when there is
-- none). Returns an empty array when the key is free.
local owner = redis.call('GET', KEYS[1])
if not owner then
	return {}
end
return {owner, redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[2]) or ''}
