-- replace_hash_fields: compare-and-set fields of one hash (key rotation rewrites encrypted values
-- without losing a concurrent change: a field whose value changed since it was read is left alone).
-- KEYS: 1 the hash
-- ARGV: triples field, value read, new value
-- Reply: number of fields replaced
-- Errors: none
-- Writes: KEYS 1 (its TTL unchanged)
local replaced = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
    replaced = replaced + 1
  end
end
return replaced
