-- get_root_auth_session: read a live root with its tabs (read only).
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s)
-- Reply: root reply {timestamp s, deadline ms, {tab id, tab JSON, ...}}
-- Errors: SS_NOT_FOUND (missing or expired)
-- Writes: nothing
local h, dl = auth_root(KEYS[1], tonumber(ARGV[2]), now_ms())
if h == nil then fail('SS_NOT_FOUND root authentication session not found') end
return auth_root_reply(h, dl)
