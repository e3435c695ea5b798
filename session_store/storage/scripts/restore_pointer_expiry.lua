-- restore_pointer_expiry: give a pointer back the expiry it had before claim_session_id extended it,
-- when the create that claimed it failed (a refused create changes nothing).
-- KEYS: 1 pointer (p:)
-- ARGV: 1 target partition (decimal), 2 its PTTL before the claim (ms, -1 = none)
-- Reply: 1 when restored, 0 when the pointer no longer points at the target
-- Errors: none
-- Writes: KEYS 1
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local left = tonumber(ARGV[2])
if left < 0 then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], math.max(1, left)) end
return 1
