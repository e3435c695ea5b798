-- get_user_session: read one live user session with its live client sessions.
-- KEYS: 1 session hash (s: or o:), 2 pointer (p:) in the same partition, 3..7 event keys
-- ARGV: HDR header; 17 realm, 18 this partition (decimal), 19 offline (0/1)
-- Reply: session reply {session id, expires_at_ms, {field, value...}, {client, deadline...}}
-- Errors: SS_NOT_FOUND (missing, expired, other realm), SS_REDIRECT <partition>
-- Writes: only KEYS 3..7, when it finds the session dead before the sweeper did (event: expired)
local now = now_ms()
local p = policy()
local offline = ARGV[19] == '1'
local ek = event_keys(3)
local sid = sid_of(KEYS[1])
local h = find_session(KEYS[1], KEYS[2], ARGV[17], ARGV[18], function() x_expire_if_due(ek, now, offline, sid) end)
local alive, mx, idle = session_status(p, h, offline, now)
if not alive then
  x_expire_if_due(ek, now, offline, sid)
  fail('SS_NOT_FOUND session expired')
end
local dl = expires_at(mx, idle)
local live = live_clients(p, h, offline, mx, dl, now)
return session_reply(sid_of(KEYS[1]), h, dl, live)
