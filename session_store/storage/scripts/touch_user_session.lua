-- touch_user_session: refresh a session (lastSessionRefresh, and named client sessions' timestamp).
-- KEYS: 1 session hash, 2 pointer, 3 realm index (r:/ro:), 4 client index (c:/co:), 5..9 event keys
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 refresh time s (0 = now),
--       21 append a `refreshed` event (0/1), 22.. client ids to refresh too
-- Reply: session reply
-- Errors: SS_NOT_FOUND, SS_REDIRECT <partition>
-- Writes: KEYS 1, 3..9 (events: refreshed when asked; expired when found dead)
local now = now_ms()
local p = policy()
local key, ridx, cidx = KEYS[1], KEYS[3], KEYS[4]
local offline = ARGV[19] == '1'
local ek = event_keys(5)
local sid = sid_of(key)
local h = find_session(key, KEYS[2], ARGV[17], ARGV[18], function() x_expire_if_due(ek, now, offline, sid) end)
local alive, user_max = session_status(p, h, offline, now)
if not alive then
  x_expire_if_due(ek, now, offline, sid)
  fail('SS_NOT_FOUND session expired')
end
local now_s = math.floor(now / 1000)
local at = tonumber(ARGV[20])
if at <= 0 or at > now_s then at = now_s end
-- Keycloak's setters ignore a value at or below the stored one: refresh times only move forward.
if at > tonumber(h.lr) then
  h.lr = tostring(at)
  redis.call('HSET', key, 'lr', h.lr)
end
for i = HDR + 6, #ARGV do
  local f = 'c:' .. ARGV[i]
  if h[f] then
    local cs = cjson.decode(h[f])
    -- An expired client session is gone (Keycloak §1.1): a refresh must not bring it back.
    local cmx, cidle = client_deadlines(p, offline, ARGV[i], cs, h.rm == '1', user_max)
    if at > cs.t and is_alive(cmx, cidle, now) then
      cs.t = at
      h[f] = cjson.encode(cs)
      redis.call('HSET', key, f, h[f])
    end
  end
end
local _, mx, idle = session_status(p, h, offline, now)
local dl = expires_at(mx, idle)
expire_at(key, dl, now)
index_add(ridx, dl, sid, now)
local live = sync_clients(p, key, cidx, sid, h, offline, mx, dl, now)
x_track(ek, offline, sid, h, mx, dl)
if ARGV[21] == '1' then emit(ek, now, 'refreshed', offline, sid, h.realm, h.user, client_ids(h), nil, nil) end
return session_reply(sid, h, dl, live)
