-- remove_user_session: delete one session and its client sessions (logout).
-- KEYS: 1 session hash, 2 pointer, 3 realm index, 4 client index
-- ARGV: HDR header; 17 realm, 18 this partition
-- Reply: {removed (0/1), user id or ""}
-- Errors: SS_REDIRECT <partition>
-- Writes: KEYS 1, 3, 4 (the user index is pruned by its next list)
local key, ridx, cidx = KEYS[1], KEYS[3], KEYS[4]
local h = load_session(key)
if h == nil then
  local target = redis.call('GET', KEYS[2])
  if target and target ~= ARGV[18] then fail('SS_REDIRECT ' .. target) end
  return {0, ''}
end
if h.realm ~= ARGV[17] then return {0, ''} end
local sid = sid_of(key)
redis.call('DEL', key)
redis.call('ZREM', ridx, sid)
for f, _ in pairs(h) do
  if string.sub(f, 1, 2) == 'c:' then redis.call('ZREM', cidx, client_member(string.sub(f, 3), sid)) end
end
-- An expired session that Redis has not deleted yet does not count as removed.
local alive = session_status(policy(), h, string.match(key, ':o:') ~= nil, now_ms())
if alive then return {1, h.user} end
return {0, h.user}
