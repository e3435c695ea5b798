-- release_partition: the flip on the source, after its target accepted the partition: every script
-- on it now answers SS_MOVED with the new epoch, its sessions leave the shard's counters and the
-- sweepers' due index. Its keys stay until the mover deletes them (nothing can read them).
-- KEYS: 1 ownership string (ss:own), 2 topology (ss:topology), 3 the shard's due index (ss:due),
--       4 the shard's counters (ss:counts)
-- ARGV: 1 partition, 2 the new map's epoch, 3 the new map (JSON), 4 counter deltas (JSON object
--       "s:<realm>"/"o:<realm>" -> sessions of the partition, subtracted)
-- Reply: 1 if the partition was released now, 0 if it was not this shard's any more
-- Errors: SS_BAD_ARG (the partition is not frozen: releasing it could lose a write)
-- Writes: KEYS 1, 2, 3, 4
local p = tonumber(ARGV[1])
local b = redis.call('GETRANGE', KEYS[1], p, p)
if b == '0' then return 0 end
if b ~= '2' and b ~= '4' then fail('SS_BAD_ARG partition ' .. p .. ' is in state ' .. b .. ', not frozen') end
redis.call('SETRANGE', KEYS[1], p, '0')
local epoch = tonumber(ARGV[2])
if tonumber(redis.call('GETRANGE', KEYS[1], 4097, -1)) < epoch then
  redis.call('SETRANGE', KEYS[1], 4097, ARGV[2])
end
if tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0') < epoch then
  redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'map', ARGV[3])
end
redis.call('ZREM', KEYS[3], string.format('%03x', p))
for field, n in pairs(cjson.decode(ARGV[4])) do redis.call('HINCRBY', KEYS[4], field, -n) end
return 1
