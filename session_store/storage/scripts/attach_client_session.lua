-- attach_client_session: create or replace the client session of a client on a live user session.
-- KEYS: 1 session hash, 2 pointer, 3 client index (c:/co:)
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 client id, 21 redirect uri,
--       22 action, 23 protocol, 24.. note name/value pairs
-- Reply: {client id, client session JSON, client deadline ms}
-- Errors: SS_NOT_FOUND, SS_REDIRECT <partition>, SS_LIMIT (too many client sessions)
-- Writes: KEYS 1, 3
local now = now_ms()
local p = policy()
local key, cidx = KEYS[1], KEYS[3]
local offline = ARGV[19] == '1'
local h = find_session(key, KEYS[2], ARGV[17], ARGV[18])
local alive, mx, idle = session_status(p, h, offline, now)
if not alive then fail('SS_NOT_FOUND session expired') end
local cid = ARGV[20]
local f = 'c:' .. cid
local live = live_clients(p, h, offline, mx, expires_at(mx, idle), now)
if h[f] == nil and #live >= p.max_clients then
  fail('SS_LIMIT a session holds at most ' .. p.max_clients .. ' client sessions')
end
local now_s = math.floor(now / 1000)
local notes = {}
for i = HDR + 8, #ARGV, 2 do notes[ARGV[i]] = ARGV[i + 1] end
local cs = {r = ARGV[21], a = ARGV[22], p = ARGV[23], t = now_s, s = now_s, us = tonumber(h.st),
  n = notes}
h[f] = cjson.encode(cs)
redis.call('HSET', key, f, h[f])
local sid = sid_of(key)
local dl = expires_at(mx, idle)
local cmx, cidle = client_deadlines(p, offline, cid, cs, h.rm == '1', mx)
local cdl = math.min(expires_at(cmx, cidle), dl)
sync_clients(p, key, cidx, sid, h, offline, mx, dl, now)
return {cid, h[f], cdl}
