-- remove_user_sessions: delete every session (online or offline) of one user, atomically.
-- KEYS: 1 user index, 2 realm index, 3 client index, 4..8 event keys, 9.. the session hashes of
--       ARGV 20.. (same order)
-- ARGV: HDR header; 17 realm, 18 user id, 19 offline (0/1), 20.. the ids the caller believes the
--       index holds
-- Reply: {"ok", number of live sessions removed} or {"stale", id...} (retry with those ids)
-- Errors: none
-- Writes: every key (events: revoked (user) per live session; expired per dead one)
local now = now_ms()
local p = policy()
local uidx, ridx, cidx = KEYS[1], KEYS[2], KEYS[3]
local offline = ARGV[19] == '1'
local ek = event_keys(4)
local members = redis.call('ZRANGE', uidx, 0, -1)
local passed = {}
for i = HDR + 4, #ARGV do passed[ARGV[i]] = true end
local stale = #members ~= #ARGV - HDR - 3
for _, m in ipairs(members) do
  if not passed[m] then stale = true end
end
if stale then
  table.insert(members, 1, 'stale')
  return members
end
local removed = 0
for i = 9, #KEYS do
  local sid = ARGV[HDR + i - 5]
  local h = load_session(KEYS[i])
  if h == nil then x_expire_if_due(ek, now, offline, sid) end
  if h ~= nil and h.realm == ARGV[17] and h.user == ARGV[18] then
    local etype, why = 'revoked', 'user'
    if not session_status(p, h, offline, now) then etype, why = dead_reason(p, h) end
    if x_end(ek, now, offline, sid, etype, why) == 'revoked' and why == 'user' then removed = removed + 1 end
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', ridx, sid)
    for f, _ in pairs(h) do
      if string.sub(f, 1, 2) == 'c:' then
        redis.call('ZREM', cidx, client_member(string.sub(f, 3), sid))
      end
    end
  end
end
redis.call('DEL', uidx)
return {'ok', removed}
