-- detach_client_session: remove one client session; the user session stays.
-- KEYS: 1 session hash, 2 pointer, 3 client index, 4..8 event keys
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 client id
-- Reply: 1 when a live client session was removed, else 0
-- Errors: SS_REDIRECT <partition>
-- Writes: KEYS 1, 3..8 (event: client_detached (logout) when a live client session was removed)
local now = now_ms()
local p = policy()
local key, cidx = KEYS[1], KEYS[3]
local offline = ARGV[19] == '1'
local h = load_session(key)
if h == nil then
  local target = redis.call('GET', KEYS[2])
  if target and target ~= ARGV[18] then fail('SS_REDIRECT ' .. target) end
  return 0
end
local f = 'c:' .. ARGV[20]
if h.realm ~= ARGV[17] or h[f] == nil then return 0 end
local alive, mx, idle = session_status(p, h, offline, now)
local sid = sid_of(key)
local cs = cjson.decode(h[f])
local cmx, cidle = client_deadlines(p, offline, ARGV[20], cs, h.rm == '1', mx)
redis.call('HDEL', key, f)
redis.call('ZREM', cidx, client_member(ARGV[20], sid))
if alive and is_alive(cmx, cidle, now) then
  h[f] = nil
  local ek = event_keys(4)
  x_track(ek, offline, sid, h, mx, expires_at(mx, idle))
  emit(ek, now, 'client_detached', offline, sid, h.realm, h.user, {ARGV[20]}, 'logout', nil)
  return 1
end
return 0
