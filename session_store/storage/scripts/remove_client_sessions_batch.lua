-- remove_client_sessions_batch: one batch of removing a client's client sessions in one partition
-- (Keycloak onClientRemoved); the user sessions stay.
-- KEYS: 1 client index (c:/co:), 2..6 event keys, 7.. session hashes of the ids in ARGV 20..
-- ARGV: HDR header (its client marker says which client sessions are covered); 17 realm,
--       18 offline (0/1), 19 client id, 20.. session ids (same order as KEYS 7..)
-- Reply: number of client sessions this call deleted
-- Errors: none
-- Writes: every key (event: client_detached (client_removed) per live session that had one)
local p = policy()
local now = now_ms()
local cidx = KEYS[1]
local offline = ARGV[18] == '1'
local ek = event_keys(2)
local cid = ARGV[19]
local ov = p.clients[cid]
local not_before = 0
if ov ~= nil and ov[5] ~= nil then not_before = ov[5] end
local f = 'c:' .. cid
local removed = 0
for i = 7, #KEYS do
  local sid = ARGV[HDR + i - 3]
  local raw = redis.call('HGET', KEYS[i], f)
  local covered = true
  if raw then
    covered = redis.call('HGET', KEYS[i], 'realm') == ARGV[17] and cjson.decode(raw).s < not_before
    if covered then
      removed = removed + redis.call('HDEL', KEYS[i], f)
      local h = load_session(KEYS[i])
      local alive, mx, idle = session_status(p, h, offline, now)
      if alive then
        x_track(ek, offline, sid, h, mx, expires_at(mx, idle))
        emit(ek, now, 'client_detached', offline, sid, h.realm, h.user, {cid}, 'client_removed', nil)
      end
    end
  end
  if covered then redis.call('ZREM', cidx, client_member(cid, sid)) end
end
return removed
