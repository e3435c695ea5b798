-- remove_user_session: delete one session and its client sessions (logout, or an admin's revoke).
-- KEYS: 1 session hash, 2 pointer, 3 realm index, 4 client index, 5..9 event keys
-- ARGV: HDR header; 17 realm, 18 this partition, 19 event: "logout" (logged_out) or "admin"
--       (revoked, reason admin)
-- Reply: {removed (0/1), user id or ""}
-- Errors: SS_REDIRECT <partition>
-- Writes: KEYS 1, 3..9 (the user index is pruned by its next list); event logged_out or revoked,
--         or expired when the session was dead already
local key, ridx, cidx = KEYS[1], KEYS[3], KEYS[4]
local ek = event_keys(5)
local now = now_ms()
local offline = string.match(key, ':o:') ~= nil
local h = load_session(key)
if h == nil then
  local target = redis.call('GET', KEYS[2])
  if target and target ~= ARGV[18] then fail('SS_REDIRECT ' .. target) end
  x_expire_if_due(ek, now, offline, sid_of(key))
  return {0, ''}
end
if h.realm ~= ARGV[17] then return {0, ''} end
local sid = sid_of(key)
redis.call('DEL', key)
redis.call('ZREM', ridx, sid)
for f, _ in pairs(h) do
  if string.sub(f, 1, 2) == 'c:' then redis.call('ZREM', cidx, client_member(string.sub(f, 3), sid)) end
end
-- An expired session that Redis has not deleted yet does not count as removed.
local p = policy()
local alive = session_status(p, h, offline, now)
local etype, why = 'logged_out', nil
if ARGV[19] == 'admin' then etype, why = 'revoked', 'admin' end
if not alive then etype, why = dead_reason(p, h) end
local ended = x_end(ek, now, offline, sid, etype, why)
if alive and ended ~= 'expired' then return {1, h.user} end
return {0, h.user}
