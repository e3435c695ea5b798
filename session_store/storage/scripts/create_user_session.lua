-- create_user_session: create an online user session (Keycloak createUserSession).
-- KEYS: 1 session hash (s:), 2 user index (u:), 3 realm index (r:)
-- ARGV: HDR header; 17 id, 18 realm, 19 user id, 20 login username, 21 ip, 22 auth method,
--       23 remember-me (0/1), 24 broker session id, 25 broker user id, 26 state (int),
--       27.. note name, note value pairs
-- Reply: session reply {session id, expires_at_ms, {field, value...}, {}}
-- Errors: SS_EXISTS (the id is taken)
-- Writes: KEYS 1, 2, 3
local now = now_ms()
local p = policy()
local key, uidx, ridx = KEYS[1], KEYS[2], KEYS[3]
local sid = ARGV[17]
if redis.call('EXISTS', key) == 1 then fail('SS_EXISTS session id already exists') end
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
for i = HDR + 11, #ARGV, 2 do
  fields[#fields + 1] = 'n:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', key, unpack(fields))
expire_at(key, dl, now)
-- The user index holds ids only (scored by the max deadline at write time, an upper bound); the
-- list and revoke scripts verify every member against its session hash.
redis.call('ZADD', uidx, mx, sid)
local last = redis.call('ZRANGE', uidx, -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', uidx, math.max(1, tonumber(last[2]) - now + 86400000))
index_add(ridx, dl, sid, now)
return session_reply(sid, load_session(key), dl, {})
