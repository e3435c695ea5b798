-- remove_auth_session: remove a tab (Keycloak removeAuthenticationSessionByTabId); removing the last
-- tab removes the root, otherwise the root's timestamp becomes now.
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s), 3 tab id
-- Reply: {removed 0/1, root removed 0/1}
-- Errors: none
-- Writes: KEYS 1
local now = now_ms()
local life = tonumber(ARGV[2])
local key = KEYS[1]
local h = auth_root(key, life, now)
local f = 't:' .. ARGV[3]
if h == nil or h[f] == nil then return {0, 0} end
h[f] = nil
if count_prefix(h, 't:') == 0 then
  redis.call('DEL', key)
  return {1, 1}
end
redis.call('HDEL', key, f)
auth_root_touch(key, h, life, now)
return {1, 0}
