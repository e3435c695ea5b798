-- restart_root_auth_session: remove every tab of a live root and set its timestamp to now (Keycloak
-- restartSession); the id stays.
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s)
-- Reply: root reply {timestamp s, deadline ms, {}}
-- Errors: SS_NOT_FOUND (missing or expired)
-- Writes: KEYS 1
local now = now_ms()
local life = tonumber(ARGV[2])
local key = KEYS[1]
local h = auth_root(key, life, now)
if h == nil then fail('SS_NOT_FOUND root authentication session not found') end
for f, _ in pairs(h) do
  if string.sub(f, 1, 2) == 't:' then
    redis.call('HDEL', key, f)
    h[f] = nil
  end
end
local dl = auth_root_touch(key, h, life, now)
return auth_root_reply(h, dl)
