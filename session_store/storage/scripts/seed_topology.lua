-- seed_topology: give a shard its ownership string when it has none (a new or wiped shard), and
-- store a partition map on it when that map is newer than the one it holds. Idempotent: nodes that
-- start together seed the same map.
-- KEYS: 1 the shard's ownership string (ss:own), 2 its topology hash (ss:topology)
-- ARGV: 1 ownership bytes (one '0'/'1' per partition) or "" to store the map only, 2 the map's
--       epoch, 3 the map (JSON)
-- Reply: {1 if the ownership string was written else 0, the epoch of the map the shard holds now}
-- Errors: none
-- Writes: KEYS 1 (only when absent), KEYS 2 (only when older)
local epoch = tonumber(ARGV[2])
local seeded = 0
if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
  seeded = 1
end
local held = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0')
if held < epoch then
  redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'map', ARGV[3])
  held = epoch
end
return {seeded, held}
