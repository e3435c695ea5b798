-- put_single_use_object: store or overwrite a single-use object for a lifespan (Keycloak put).
-- The hash holds the notes as fields plus the deadline under the field "\0" (no note name can hold
-- a NUL), so an object with no notes still exists.
-- KEYS: 1 object hash (su:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan ms (> 0, checked by the caller), 3.. note name, value pairs
-- Reply: the deadline, epoch ms
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
local life = tonumber(ARGV[2])
local dl = now + life
local fields = {'\0', dl}
for i = 3, #ARGV, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], life)
return dl
