-- replace_single_use_object: replace the notes of a live single-use object, keeping its deadline and
-- its remaining TTL (Keycloak replace).
-- KEYS: 1 object hash (su:)
-- ARGV: 1 now ms ("" = TIME), 2.. note name, value pairs
-- Reply: 1 when replaced, 0 when no live object was there
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
local dl = redis.call('HGET', KEYS[1], '\0')
if not dl or tonumber(dl) <= now then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
local fields = {'\0', dl}
for i = 2, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
