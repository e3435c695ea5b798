-- undo_lookup_hint: take back what add_lookup_hint did for a create that then failed: the member
-- gets its previous score back (or goes), and the key's expiry follows its last member again.
-- KEYS: 1 hint zset (bs:/bu:/buo:)
-- ARGV: 1 now ms ("" = TIME), 2 member, 3 its score before add_lookup_hint ("" = it was new)
-- Reply: 1
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
end
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
else
  hint_expiry(KEYS[1], now)
end
return 1
