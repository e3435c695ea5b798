-- expire_sessions: end the sessions of one partition whose deadline has passed (the sweeper's and the
-- keyspace-notification listener's call; a read that finds a session dead does the same for one).
-- KEYS: 1..5 event keys of the partition (x, xm, due, events, counts)
-- ARGV: 1 now (epoch ms, "" = the shard's TIME), 2 most sessions to end in this call
-- Reply: {sessions ended, 1 when more are due (call again) else 0}
-- Errors: none
-- Writes: every key (event: expired (idle or max) per session ended). Sets the partition's `due`
--         score to its earliest remaining deadline (or removes it), which also releases a claim.
local now = now_ms()
local ek = event_keys(1)
local limit = tonumber(ARGV[2])
local members = redis.call('ZRANGEBYSCORE', ek.x, '-inf', now, 'LIMIT', 0, limit)
local ended = 0
for _, m in ipairs(members) do
  local offline = string.sub(m, 1, 1) == 'o'
  if x_end(ek, now, offline, string.sub(m, 3), 'expired', nil) then ended = ended + 1 end
end
local first = redis.call('ZRANGE', ek.x, 0, 0, 'WITHSCORES')
local more = 0
if #first == 0 then
  redis.call('ZREM', ek.due, ek.part)
else
  redis.call('ZADD', ek.due, first[2], ek.part)
  if tonumber(first[2]) <= now then more = 1 end
end
return {ended, more}
