-- lease_lock: take, renew or give back a lease held by one owner token (the mover's lock).
-- KEYS: 1 the lock key
-- ARGV: 1 owner token, 2 lease ms (0 = give the lease back)
-- Reply: 1 if the caller holds the lease now (or gave it back), 0 if another owner holds it
-- Errors: none
-- Writes: KEYS 1
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then
  if holder then redis.call('DEL', KEYS[1]) end
  return 1
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
