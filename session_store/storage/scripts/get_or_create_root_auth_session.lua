-- get_or_create_root_auth_session: the live root with this id, or a new one (Keycloak
-- getOrCreateRootAuthenticationSession), atomically: concurrent calls with one id get one root.
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s), 3 create only (1: a freshly minted id, which must be new)
-- Reply: root reply {timestamp s, deadline ms, {tab id, tab JSON, ...}}
-- Errors: SS_EXISTS (create only, and a live root has the id)
-- Writes: KEYS 1 (only when it creates)
local now = now_ms()
local life = tonumber(ARGV[2])
local h, dl = auth_root(KEYS[1], life, now)
if h ~= nil then
  if ARGV[3] == '1' then fail('SS_EXISTS root authentication session id already exists') end
  return auth_root_reply(h, dl)
end
-- Missing, or expired and not yet dropped by Redis: a new root; an expired one's tabs go with it.
redis.call('DEL', KEYS[1])
h = {}
dl = auth_root_touch(KEYS[1], h, life, now)
return auth_root_reply(h, dl)
