-- take_single_use_object: remove a single-use object and return it (Keycloak remove). Atomic: of any
-- number of racing callers, only the one whose call removes a live object gets its notes.
-- KEYS: 1 object hash (su:)
-- ARGV: 1 now ms ("" = TIME)
-- Reply: {deadline ms, {note name, value, ...}}
-- Errors: SS_NOT_FOUND (missing, or past its deadline: then it is deleted too)
-- Writes: KEYS 1
local now = now_ms()
local flat = redis.call('HGETALL', KEYS[1])
if #flat == 0 then fail('SS_NOT_FOUND single-use object not found') end
redis.call('DEL', KEYS[1])
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
