-- attach_client_session: create or replace the client session of a client on a live user session;
-- optionally under the user-session count limiter's client limit (§4), applied only when the session
-- has no live client session for the client yet (a new client login into an existing SSO session).
-- KEYS: 1 session hash, 2 pointer, 3 client index (c:/co:), 4..8 event keys; with limits also
--       9 user index (u:), 10 realm index (r:), 11.. the session hashes of the ids passed after the
--       notes (same order)
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 client id, 21 redirect uri,
--       22 action, 23 protocol, 24 the session's user id with limits ("" = no limits),
--       25 client limit, 26 behaviour (0 deny new session, 1 terminate oldest session),
--       27 n = number of notes, 28..27+2n note name/value pairs, then (with limits) the ids the
--       caller believes the user index holds
-- Reply: {"ok", client id, client session JSON, client deadline ms, {terminated session id...}}, or
--        {"stale", id...} without writing when the user index holds an id that was not passed
-- Errors: SS_NOT_FOUND, SS_REDIRECT <partition>, SS_LIMIT (too many client sessions),
--         SS_STALE (with limits: the session belongs to another user than passed; re-read it),
--         SS_SESSION_LIMIT (the client limit is reached and the behaviour denies)
-- Writes: KEYS 1, 3..8 (events: client_attached; revoked (limit) per terminated session; expired
--         when found dead); with limits also 9, 10 and the terminated sessions' hashes
local now = now_ms()
local p = policy()
local key, cidx = KEYS[1], KEYS[3]
local offline = ARGV[19] == '1'
local ek = event_keys(4)
local sid = sid_of(key)
local h = find_session(key, KEYS[2], ARGV[17], ARGV[18], function() x_expire_if_due(ek, now, offline, sid) end)
local alive, mx, idle = session_status(p, h, offline, now)
if not alive then
  x_expire_if_due(ek, now, offline, sid)
  fail('SS_NOT_FOUND session expired')
end
local cid = ARGV[20]
local f = 'c:' .. cid
local dl = expires_at(mx, idle)
local live = live_clients(p, h, offline, mx, dl, now)
if h[f] == nil and #live >= p.max_clients then
  fail('SS_LIMIT a session holds at most ' .. p.max_clients .. ' client sessions')
end
local first_note = HDR + 12
local first_id = first_note + 2 * tonumber(ARGV[HDR + 11])
local victims, gone = {}, {}
local uidx, ridx
if ARGV[24] ~= '' then
  if h.user ~= ARGV[24] then fail('SS_STALE the session belongs to another user') end
  uidx, ridx = KEYS[9], KEYS[10]
  if not has_live_client(p, h, offline, mx, dl, now, cid) then
    local stale = stale_user_index(uidx, first_id)
    if stale then return stale end
    local sessions
    sessions, gone = user_sessions(p, ARGV[17], h.user, 11, first_id, now, cid, sid)
    victims = limit_victims(sessions, 0, tonumber(ARGV[25]), false, ARGV[26] == '1')
    if victims == nil then fail('SS_SESSION_LIMIT the user has too many sessions with this client') end
  end
end
for _, g in ipairs(gone) do redis.call('ZREM', uidx, g) end
local evicted = {}
if #victims > 0 then
  end_victims(ek, now, victims)
  evicted = terminate_sessions(victims, uidx, ridx, cidx)
end
local now_s = math.floor(now / 1000)
local notes = {}
for i = first_note, first_id - 1, 2 do notes[ARGV[i]] = ARGV[i + 1] end
local cs = {r = ARGV[21], a = ARGV[22], p = ARGV[23], t = now_s, s = now_s, us = tonumber(h.st),
  n = notes}
h[f] = cjson.encode(cs)
redis.call('HSET', key, f, h[f])
local cmx, cidle = client_deadlines(p, offline, cid, cs, h.rm == '1', mx)
local cdl = math.min(expires_at(cmx, cidle), dl)
sync_clients(p, key, cidx, sid, h, offline, mx, dl, now)
x_track(ek, offline, sid, h, mx, dl)
emit(ek, now, 'client_attached', offline, sid, h.realm, h.user, {cid}, nil, nil)
return {'ok', cid, h[f], cdl, evicted}
