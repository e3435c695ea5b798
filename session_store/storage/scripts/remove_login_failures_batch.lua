-- remove_login_failures_batch: delete a batch of one partition's login-failure records of a realm
-- (RemoveRealmLoginFailures runs it per partition with the user ids it read from the index).
-- KEYS: 1 the realm's login-failure index of this partition (lfr:), 2.. the records of ARGV 2.. (same order)
-- ARGV: 1 now ms (unused), 2.. user ids
-- Reply: the number of records deleted
-- Errors: none
-- Writes: every key
local removed = 0
for i = 2, #KEYS do
  removed = removed + redis.call('DEL', KEYS[i])
  redis.call('SREM', KEYS[1], ARGV[i])
end
return removed
