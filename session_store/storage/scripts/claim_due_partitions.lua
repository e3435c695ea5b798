-- claim_due_partitions: claim a shard's partitions with a passed deadline for one sweeper, so that
-- several service nodes share the sweeping without doing it twice: a claimed partition's `due` score
-- moves to now + lease; expire_sessions sets it back to the partition's real earliest deadline. A
-- sweeper that dies leaves its claims to lapse after the lease.
-- KEYS: 1 the shard's due index (ss:due)
-- ARGV: 1 now (epoch ms, "" = the shard's TIME), 2 lease (ms), 3 most partitions to claim
-- Reply: {partition (3 hex digits)...}
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
local parts = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local until_ms = now + tonumber(ARGV[2])
for _, part in ipairs(parts) do redis.call('ZADD', KEYS[1], until_ms, part) end
return parts
