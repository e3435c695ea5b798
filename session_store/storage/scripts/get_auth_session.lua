-- get_auth_session: read one tab of a live root, if it belongs to the client (read only).
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s), 3 tab id, 4 client id
-- Reply: {tab id, tab JSON}
-- Errors: SS_NOT_FOUND (root missing or expired, no such tab, or the tab is another client's)
-- Writes: nothing
local h = auth_root(KEYS[1], tonumber(ARGV[2]), now_ms())
if h == nil then fail('SS_NOT_FOUND root authentication session not found') end
local v = h['t:' .. ARGV[3]]
if v == nil or cjson.decode(v).c ~= ARGV[4] then fail('SS_NOT_FOUND authentication session not found') end
return {ARGV[3], v}
