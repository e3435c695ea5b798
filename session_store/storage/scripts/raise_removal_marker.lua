-- raise_removal_marker: record that sessions started before a time were removed in bulk.
-- KEYS: 1 the realm's markers hash (ss:markers:<realm>)
-- ARGV: 1 now (unused), 2 field ("" = the whole realm, else a client id), 3 not-before, epoch s
-- Reply: the field's value after the call (markers only move forward)
-- Errors: none
-- Writes: KEYS 1
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
local wanted = tonumber(ARGV[3])
if wanted > current then
  redis.call('HSET', KEYS[1], ARGV[2], wanted)
  return wanted
end
return current
