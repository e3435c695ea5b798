-- add_lookup_hint: record "<partition>:<session id>" under a secondary lookup (broker ids), before
-- the session is written; readers verify every hint against the session itself.
-- KEYS: 1 hint zset (bs:/bu:/buo:)
-- ARGV: 1 now ms ("" = TIME), 2 member, 3 score: ms after which the hint is surely stale (or "+inf")
-- Reply: 1
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] == 'inf' then redis.call('PERSIST', KEYS[1])
else redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now)) end
return 1
