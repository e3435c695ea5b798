-- create_auth_session: create a tab for a client on a live root (Keycloak
-- createAuthenticationSession). At the tab limit, the oldest tabs (smallest timestamp, then creation
-- order) are evicted first until the new one fits. The root's timestamp becomes now.
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s), 3 tab limit, 4 new tab id, 5 client id,
--       6 max bytes of a root's tabs
-- Reply: {tab id, tab JSON}
-- Errors: SS_NOT_FOUND (root missing or expired), SS_EXISTS (the tab id is taken),
--         SS_LIMIT (the root's tabs would exceed their byte limit)
-- Writes: KEYS 1
local now = now_ms()
local life = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local key = KEYS[1]
local h = auth_root(key, life, now)
if h == nil then fail('SS_NOT_FOUND root authentication session not found') end
local f = 't:' .. ARGV[4]
if h[f] ~= nil then fail('SS_EXISTS tab id already exists') end
local tabs = {}
for name, v in pairs(h) do
  if string.sub(name, 1, 2) == 't:' then
    local t = cjson.decode(v)
    tabs[#tabs + 1] = {name, t.t, t.o}
  end
end
local evict = {}
if #tabs >= limit then
  table.sort(tabs, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    return a[3] < b[3]
  end)
  for i = 1, #tabs - limit + 1 do
    evict[#evict + 1] = tabs[i][1]
    h[tabs[i][1]] = nil
  end
end
local order = tonumber(h.n or '0')
local json = cjson.encode({c = ARGV[5], t = math.floor(now / 1000), o = order})
if auth_root_bytes(h) + #json > tonumber(ARGV[6]) then
  fail('SS_LIMIT the root authentication session holds at most ' .. ARGV[6] .. ' bytes of tabs')
end
for _, name in ipairs(evict) do redis.call('HDEL', key, name) end
redis.call('HSET', key, f, json, 'n', order + 1)
auth_root_touch(key, h, life, now)
return {ARGV[4], json}
