-- remove_root_auth_session: remove a root and all its tabs (an expired one too, silently).
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s)
-- Reply: 1 when a live root was removed, else 0
-- Errors: none
-- Writes: KEYS 1
local h = auth_root(KEYS[1], tonumber(ARGV[2]), now_ms())
redis.call('DEL', KEYS[1])
if h == nil then return 0 end
return 1
