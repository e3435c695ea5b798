-- update_client_session: change fields and notes of a live client session.
-- KEYS: 1 session hash, 2 pointer, 3 client index
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 client id,
--       21 set redirect (0/1), 22 redirect, 23 set action (0/1), 24 action, 25 set protocol (0/1),
--       26 protocol, 27 timestamp s (0 = unchanged), 28 number of notes to set N,
--       29.. N name/value pairs, then names of notes to remove
-- Reply: {client id, client session JSON, client deadline ms}
-- Errors: SS_NOT_FOUND (user or client session), SS_REDIRECT <partition>, SS_LIMIT (too many notes)
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
if h[f] == nil then fail('SS_NOT_FOUND client session not found') end
local cs = cjson.decode(h[f])
local rm = h.rm == '1'
local dl = expires_at(mx, idle)
local cmx, cidle = client_deadlines(p, offline, cid, cs, rm, mx)
if not is_alive(cmx, cidle, now) then fail('SS_NOT_FOUND client session expired') end
local nset = tonumber(ARGV[HDR + 12])
local first_del = HDR + 13 + 2 * nset
for i = HDR + 13, first_del - 1, 2 do cs.n[ARGV[i]] = ARGV[i + 1] end
for i = first_del, #ARGV do cs.n[ARGV[i]] = nil end
local count = 0
for _ in pairs(cs.n) do count = count + 1 end
if count > p.max_notes then
  fail('SS_LIMIT a client session holds at most ' .. p.max_notes .. ' notes')
end
if ARGV[21] == '1' then cs.r = ARGV[22] end
if ARGV[23] == '1' then cs.a = ARGV[24] end
if ARGV[25] == '1' then cs.p = ARGV[26] end
local ts = tonumber(ARGV[27])
local now_s = math.floor(now / 1000)
if ts > now_s then ts = now_s end
if ts > cs.t then cs.t = ts end
if next(cs.n) == nil then cs.n = {} end
h[f] = cjson.encode(cs)
redis.call('HSET', key, f, h[f])
local sid = sid_of(key)
cmx, cidle = client_deadlines(p, offline, cid, cs, rm, mx)
sync_clients(p, key, cidx, sid, h, offline, mx, dl, now)
return {cid, h[f], math.min(expires_at(cmx, cidle), dl)}
