-- contains_single_use_object: whether a live single-use object is under the key (Keycloak contains).
-- KEYS: 1 object hash (su:)
-- ARGV: 1 now ms ("" = TIME)
-- Reply: 1 or 0
-- Errors: none
-- Writes: nothing
local now = now_ms()
local dl = redis.call('HGET', KEYS[1], '\0')
if dl and tonumber(dl) > now then return 1 end
return 0
