-- list_user_sessions: the live sessions of one user, verified one by one against their hashes.
-- KEYS: 1 user index (u:/uo:), 2.. the session hashes of the ids in ARGV 20.. (same order)
-- ARGV: HDR header; 17 realm, 18 user id, 19 offline (0/1), 20.. the ids the caller believes the
--       index holds
-- Reply: {"ok", session reply...} or {"stale", id...} when the index holds other ids than passed
--        (the caller retries with those ids: keys are only ever passed in KEYS)
-- Errors: none
-- Writes: KEYS 1 (dead and foreign ids are pruned)
local now = now_ms()
local p = policy()
local uidx = KEYS[1]
local offline = ARGV[19] == '1'
local members = redis.call('ZRANGE', uidx, 0, -1)
local passed = {}
for i = HDR + 4, #ARGV do passed[ARGV[i]] = true end
local stale = #members ~= #ARGV - HDR - 3
for _, m in ipairs(members) do
  if not passed[m] then stale = true end
end
if stale then
  table.insert(members, 1, 'stale')
  return members
end
local out = {'ok'}
for i = 2, #KEYS do
  local sid = ARGV[HDR + 2 + i]
  local h = load_session(KEYS[i])
  local keep = false
  if h ~= nil and h.realm == ARGV[17] and h.user == ARGV[18] then
    local alive, mx, idle = session_status(p, h, offline, now)
    if alive then
      local dl = expires_at(mx, idle)
      out[#out + 1] = session_reply(sid, h, dl, live_clients(p, h, offline, mx, dl, now))
      keep = true
    end
  end
  if not keep then redis.call('ZREM', uidx, sid) end
end
return out
