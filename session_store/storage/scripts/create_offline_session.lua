-- create_offline_session: copy a live online session (and named client sessions) into an offline
-- session with the same id; when the offline session exists, refresh it and add missing clients
-- (Keycloak createOfflineUserSession + createOfflineClientSession, createOrUpdateOfflineSession).
-- KEYS: 1 online session hash, 2 pointer, 3 offline session hash, 4 offline user index (uo:),
--       5 offline realm index (ro:), 6 offline client index (co:), 7..11 event keys
-- ARGV: HDR header; 17 realm, 18 this partition, 19 expected user id, 20.. client ids to copy
-- Reply: session reply of the offline session
-- Errors: SS_NOT_FOUND (no live online session), SS_REDIRECT <partition>,
--         SS_STALE <user id> (the session's user is not the expected one: retry with its keys)
-- Writes: KEYS 3..11 (event: created (offline) for a new offline session; the dead one it replaces
--         ends first)
local now = now_ms()
local p = policy()
local okey, uidx, ridx, cidx = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ek = event_keys(7)
local h = find_session(KEYS[1], KEYS[2], ARGV[17], ARGV[18])
local alive = session_status(p, h, false, now)
if not alive then fail('SS_NOT_FOUND session expired') end
if h.user ~= ARGV[19] then fail('SS_STALE ' .. h.user) end
local on_mx, on_idle = user_deadlines(p, false, tonumber(h.st), tonumber(h.lr), h.rm == '1')
local on_live = live_clients(p, h, false, on_mx, expires_at(on_mx, on_idle), now)
local now_s = math.floor(now / 1000)
local o = load_session(okey)
local dead = {}
-- A dead offline session is replaced; it is deleted below, after every check has passed.
local replace_dead = o ~= nil and not session_status(p, o, true, now)
local fresh = o == nil or replace_dead
local dead_o = o
if replace_dead then o = nil end
if o == nil then
  o = {}
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) ~= 'c:' then o[f] = v end
  end
  o.st = tostring(now_s)
  o.lr = tostring(now_s)
else
  if now_s > tonumber(o.lr) then o.lr = tostring(now_s) end
  -- An expired offline client session is missing (Keycloak): it may be copied again below.
  local o_mx, o_idle = user_deadlines(p, true, tonumber(o.st), tonumber(o.lr), o.rm == '1')
  local _, expired = live_clients(p, o, true, o_mx, expires_at(o_mx, o_idle), now)
  for _, f in ipairs(expired) do o[f] = nil end
  dead = expired
end
local wanted = {}
for i = HDR + 4, #ARGV do wanted[ARGV[i]] = true end
local have = count_prefix(o, 'c:')
for _, c in ipairs(on_live) do
  local f = 'c:' .. c[1]
  if wanted[c[1]] and o[f] == nil then
    if have >= p.max_clients then
      fail('SS_LIMIT a session holds at most ' .. p.max_clients .. ' client sessions')
    end
    have = have + 1
    local cs = c[2]
    cs.t = now_s
    cs.s = now_s
    cs.us = tonumber(o.st)
    if next(cs.n) == nil then cs.n = {} end
    o[f] = cjson.encode(cs)
  end
end
if replace_dead then
  redis.call('DEL', okey)
  x_end(ek, now, true, sid_of(okey), dead_reason(p, dead_o))
end
for _, f in ipairs(dead) do
  if o[f] == nil then
    redis.call('HDEL', okey, f)
    redis.call('ZREM', cidx, client_member(string.sub(f, 3), sid_of(okey)))
  end
end
local flat = {}
for f, v in pairs(o) do
  flat[#flat + 1] = f
  flat[#flat + 1] = v
end
redis.call('HSET', okey, unpack(flat))
local sid = sid_of(okey)
local mx, idle = user_deadlines(p, true, tonumber(o.st), tonumber(o.lr), o.rm == '1')
local dl = expires_at(mx, idle)
expire_at(okey, dl, now)
if mx == -1 then
  redis.call('ZADD', uidx, '+inf', sid)
  redis.call('PERSIST', uidx)
else
  redis.call('ZADD', uidx, mx, sid)
  local ttl = redis.call('PTTL', uidx)
  if ttl >= 0 then redis.call('PEXPIRE', uidx, math.max(ttl, mx - now + 86400000)) end
end
index_add(ridx, dl, sid, now)
local live = sync_clients(p, okey, cidx, sid, o, true, mx, dl, now)
if fresh then x_begin(ek, now, true, sid, o, mx, dl) else x_track(ek, true, sid, o, mx, dl) end
return session_reply(sid, o, dl, live)
