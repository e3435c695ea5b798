-- freeze_partition: the last step before a partition's ownership flips: every script on it now
-- answers SS_FROZEN, so nothing changes while the mover copies what the journal says changed since
-- its first copy.
-- KEYS: 1 the shard's ownership string (ss:own), 2 its move journal (ss:journal)
-- ARGV: 1 partition, 2 the partition's key prefix ("ss:{PPP}:")
-- Reply: the journal's keys of the partition (taken out of the journal)
-- Errors: SS_MOVED <partition> <epoch> (not owned: the move already flipped, or never started)
-- Writes: KEYS 1, KEYS 2
local p = tonumber(ARGV[1])
local b = redis.call('GETRANGE', KEYS[1], p, p)
if b ~= '3' and b ~= '2' and b ~= '1' then
  fail('SS_MOVED ' .. p .. ' ' .. redis.call('GETRANGE', KEYS[1], 4097, -1))
end
redis.call('SETRANGE', KEYS[1], p, '2')
local prefix = ARGV[2]
local mine = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.sub(k, 1, #prefix) == prefix then mine[#mine + 1] = k end
end
for i = 1, #mine, 1000 do
  redis.call('SREM', KEYS[2], unpack(mine, i, math.min(i + 999, #mine)))
end
return mine
