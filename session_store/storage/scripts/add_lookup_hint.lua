-- add_lookup_hint: record "<partition>:<session id>" under a secondary lookup (broker ids), before
-- the session is written; readers verify every hint against the session itself.
-- KEYS: 1 hint zset (bs:/bu:/buo:)
-- ARGV: 1 now ms ("" = TIME), 2 member, 3 score: ms after which the hint is surely stale (or "+inf")
-- Reply: the member's previous score, or "" when it is new (what undo_lookup_hint restores)
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local old = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
hint_expiry(KEYS[1], now)
return old or ''
