-- claim_session_id: reserve a caller-brought id in its home partition by pointing it at the
-- partition that will hold the session; also extends an existing claim of the same target.
-- KEYS: 1 pointer (p:), 2 online session hash of the id in this (home) partition
-- ARGV: 1 target partition (decimal), 2 pointer TTL ms (0 = no expiry)
-- Reply: 1 when this call created the pointer; {0, its PTTL before this call (ms, -1 = none)} when
--        it already pointed at the target (what restore_pointer_expiry puts back if the create fails)
-- Errors: SS_EXISTS (the id is taken by a session here or a pointer elsewhere)
-- Writes: KEYS 1
if redis.call('EXISTS', KEYS[2]) == 1 then fail('SS_EXISTS session id already exists') end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then fail('SS_EXISTS session id already exists') end
local ttl = tonumber(ARGV[2])
if current then
  local left = redis.call('PTTL', KEYS[1])
  if ttl <= 0 then redis.call('PERSIST', KEYS[1])
  elseif left >= 0 and ttl > left then redis.call('PEXPIRE', KEYS[1], ttl) end
  return {0, left}
end
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl) else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
