-- set_partition_state: change this shard's ownership byte of some partitions, only from the expected
-- states (the mover's steps: start copying out, roll back a move that did not flip).
-- KEYS: 1 the shard's ownership string (ss:own)
-- ARGV: 1 the states a partition may be in (e.g. "13"), 2 the new state (one byte), 3.. partitions
-- Reply: how many partitions changed (those already in the new state count as done, not changed)
-- Errors: SS_MOVED <partition> <epoch> (a partition in none of the expected states)
-- Writes: KEYS 1
local from, to = ARGV[1], ARGV[2]
local changed = {}
for i = 3, #ARGV do
  local p = tonumber(ARGV[i])
  local b = redis.call('GETRANGE', KEYS[1], p, p)
  if b ~= to then
    if b == '' or not string.find(from, b, 1, true) then
      fail('SS_MOVED ' .. p .. ' ' .. redis.call('GETRANGE', KEYS[1], 4097, -1))
    end
    changed[#changed + 1] = p
  end
end
for _, p in ipairs(changed) do redis.call('SETRANGE', KEYS[1], p, to) end
return #changed
