-- get_single_use_object: read a live single-use object (Keycloak get).
-- KEYS: 1 object hash (su:)
-- ARGV: 1 now ms ("" = TIME)
-- Reply: {deadline ms, {note name, value, ...}}
-- Errors: SS_NOT_FOUND (missing, or past its deadline)
-- Writes: nothing
local now = now_ms()
local flat = redis.call('HGETALL', KEYS[1])
local dl, notes = nil, {}
for i = 1, #flat, 2 do
  if flat[i] == '\0' then
    dl = tonumber(flat[i + 1])
  else
    notes[#notes + 1] = flat[i]
    notes[#notes + 1] = flat[i + 1]
  end
end
if dl == nil or dl <= now then fail('SS_NOT_FOUND single-use object not found') end
return {dl, notes}
