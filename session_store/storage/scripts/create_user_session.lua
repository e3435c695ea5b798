-- create_user_session: create an online user session (Keycloak createUserSession), optionally under
-- the user-session count limiter (§4), decided here atomically with the create.
-- KEYS: 1 session hash (s:), 2 user index (u:), 3 realm index (r:), 4 client index (c:),
--       5..9 event keys, 10.. (with limits) the session hashes of the ids passed after the notes
-- ARGV: HDR header; 17 id, 18 realm, 19 user id, 20 login username, 21 ip, 22 auth method,
--       23 remember-me (0/1), 24 broker session id, 25 broker user id, 26 state (int),
--       27 realm limit (0 = none), 28 client limit (0 = none), 29 the login's client id,
--       30 behaviour (0 deny new session, 1 terminate oldest session), 31 n = number of notes,
--       32..31+2n note name, note value pairs, then (with limits) the ids the caller believes the
--       user index holds
-- Reply: {"ok", session reply, {terminated session id...}}, or {"stale", id...} without writing when
--        the user index holds an id that was not passed (the caller retries with those ids)
-- Errors: SS_EXISTS (the id is taken), SS_SESSION_LIMIT (a limit is reached and the behaviour denies)
-- Writes: KEYS 1..9 (events: created; revoked (limit) for each terminated session); with limits the
--         terminated sessions' hashes
local now = now_ms()
local p = policy()
local key, uidx, ridx, cidx = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ek = event_keys(5)
local sid = ARGV[17]
if redis.call('EXISTS', key) == 1 then fail('SS_EXISTS session id already exists') end
local realm_limit, client_limit = tonumber(ARGV[HDR + 11]), tonumber(ARGV[HDR + 12])
local first_note = HDR + 16
local first_id = first_note + 2 * tonumber(ARGV[HDR + 15])
local victims, gone = {}, {}
if realm_limit > 0 or client_limit > 0 then
  local stale = stale_user_index(uidx, first_id)
  if stale then return stale end
  local sessions
  sessions, gone = user_sessions(p, ARGV[18], ARGV[19], 10, first_id, now, ARGV[HDR + 13], sid)
  victims = limit_victims(sessions, realm_limit, client_limit, true, ARGV[HDR + 14] == '1')
  if victims == nil then
    fail('SS_SESSION_LIMIT the user has too many sessions')
  end
end
for _, g in ipairs(gone) do redis.call('ZREM', uidx, g) end
end_victims(ek, now, victims)
local evicted = terminate_sessions(victims, uidx, ridx, cidx)
local st = math.floor(now / 1000)
local rm = ARGV[23] == '1'
local mx, idle = user_deadlines(p, false, st, st, rm)
local dl = expires_at(mx, idle)
local fields = {'realm', ARGV[18], 'user', ARGV[19], 'st', st, 'lr', st}
-- Empty and default fields are not stored: a session hash that stays small stays a listpack.
local optional = {login = ARGV[20], ip = ARGV[21], auth = ARGV[22], bs = ARGV[24], bu = ARGV[25]}
for f, v in pairs(optional) do
  if v ~= '' then
    fields[#fields + 1] = f
    fields[#fields + 1] = v
  end
end
if rm then
  fields[#fields + 1] = 'rm'
  fields[#fields + 1] = '1'
end
if ARGV[26] ~= '0' then
  fields[#fields + 1] = 'state'
  fields[#fields + 1] = ARGV[26]
end
for i = first_note, first_id - 1, 2 do
  fields[#fields + 1] = 'n:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', key, unpack(fields))
expire_at(key, dl, now)
-- The user index holds ids only (scored by the max deadline at write time, an upper bound); the
-- list, revoke and limit paths verify every member against its session hash.
redis.call('ZADD', uidx, mx, sid)
local last = redis.call('ZRANGE', uidx, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', uidx, math.max(1, tonumber(last[2]) - now + 86400000))
index_add(ridx, dl, sid, now)
local h = load_session(key)
x_begin(ek, now, false, sid, h, mx, dl)
return {'ok', session_reply(sid, h, dl, {}), evicted}
