-- update_user_session: set/remove notes and set the state of a live session.
-- KEYS: 1 session hash, 2 pointer
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 state ("" = unchanged),
--       21 number of notes to set N, 22.. N name/value pairs, then names of notes to remove
-- Reply: session reply
-- Errors: SS_NOT_FOUND, SS_REDIRECT <partition>, SS_LIMIT (too many notes)
-- Writes: KEYS 1
local now = now_ms()
local p = policy()
local key = KEYS[1]
local offline = ARGV[19] == '1'
local h = find_session(key, KEYS[2], ARGV[17], ARGV[18])
local alive, mx, idle = session_status(p, h, offline, now)
if not alive then fail('SS_NOT_FOUND session expired') end
local nset = tonumber(ARGV[21])
local first_del = HDR + 6 + 2 * nset
local after = {}
for f, _ in pairs(h) do
  if string.sub(f, 1, 2) == 'n:' then after[f] = true end
end
for i = HDR + 6, first_del - 1, 2 do after['n:' .. ARGV[i]] = true end
for i = first_del, #ARGV do after['n:' .. ARGV[i]] = nil end
local count = 0
for _ in pairs(after) do count = count + 1 end
if count > p.max_notes then fail('SS_LIMIT a session holds at most ' .. p.max_notes .. ' notes') end
for i = first_del, #ARGV do
  redis.call('HDEL', key, 'n:' .. ARGV[i])
  h['n:' .. ARGV[i]] = nil
end
for i = HDR + 6, first_del - 1, 2 do
  redis.call('HSET', key, 'n:' .. ARGV[i], ARGV[i + 1])
  h['n:' .. ARGV[i]] = ARGV[i + 1]
end
if ARGV[20] ~= '' then
  redis.call('HSET', key, 'state', ARGV[20])
  h.state = ARGV[20]
end
local dl = expires_at(mx, idle)
return session_reply(sid_of(key), h, dl, live_clients(p, h, offline, mx, dl, now))
