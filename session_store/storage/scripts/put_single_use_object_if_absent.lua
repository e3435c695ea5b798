-- put_single_use_object_if_absent: store an object with empty notes only when none is alive under
-- the key (Keycloak putIfAbsent). A dead object (past its stored deadline) counts as absent.
-- KEYS: 1 object hash (su:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan ms (> 0, checked by the caller)
-- Reply: 1 when this call stored it, 0 when a live object was there
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
local current = redis.call('HGET', KEYS[1], '\0')
if current and tonumber(current) > now then return 0 end
local life = tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '\0', now + life)
redis.call('PEXPIRE', KEYS[1], life)
return 1
