-- accept_partition: the flip on the target: the partition (copied while frozen on its source) is
-- this shard's from now on, under a map with a higher epoch. Its sessions join the shard's counters
-- and its earliest deadline the sweepers' due index.
-- KEYS: 1 ownership string (ss:own), 2 topology (ss:topology), 3 the shard's due index (ss:due),
--       4 the shard's counters (ss:counts). (Not the partition's own keys: the ownership guard would
--       refuse them until this very script flips the partition.)
-- ARGV: 1 partition, 2 the new map's epoch, 3 the new map (JSON), 4 counter deltas (JSON object
--       "s:<realm>"/"o:<realm>" -> sessions of the partition), 5 its earliest deadline (ms, "" = none)
-- Reply: 1 if the partition flipped now, 0 if it was already this shard's
-- Errors: SS_BAD_ARG (the shard is frozen or copying it out: it cannot be a move's target)
-- Writes: KEYS 1, 2, 3, 4
local p = tonumber(ARGV[1])
local b = redis.call('GETRANGE', KEYS[1], p, p)
if b == '1' then return 0 end
if b ~= '0' then fail('SS_BAD_ARG partition ' .. p .. ' is in state ' .. b .. ' on the target') end
redis.call('SETRANGE', KEYS[1], p, '1')
local epoch = tonumber(ARGV[2])
if tonumber(redis.call('GETRANGE', KEYS[1], 4097, -1)) < epoch then
  redis.call('SETRANGE', KEYS[1], 4097, ARGV[2])
end
if tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0') < epoch then
  redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'map', ARGV[3])
end
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], string.format('%03x', p)) end
for field, n in pairs(cjson.decode(ARGV[4])) do redis.call('HINCRBY', KEYS[4], field, n) end
return 1
