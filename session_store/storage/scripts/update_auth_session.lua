-- update_auth_session: apply every change of one UpdateAuthenticationSession to a tab of a live root,
-- if the tab belongs to the client; the root's timestamp becomes now (also when nothing changes).
-- KEYS: 1 root hash (a:)
-- ARGV: 1 now ms ("" = TIME), 2 lifespan (s), 3 tab id, 4 client id, 5 max notes per note map,
--       6 max execution statuses, 7 max required actions, 8 max client scopes, 9 max bytes of a tab,
--       10 max bytes of a root's tabs, 11 the change as JSON:
--       {r, a, p, u: new redirect uri, action, protocol, user id (absent: unchanged, "": cleared);
--        xc: [authenticators to clear], xs: {authenticator: status}; qr, qa: [required actions to
--        remove, to add]; s: [client scopes] (absent: unchanged); unr/anr/cnr: [user-session, auth,
--        client note names to remove]; uns/ans/cns: {name: value} to set; anc: true clears auth notes}
--       Order: fields; clear (anc), removes, then sets/adds.
-- Reply: {tab id, tab JSON}
-- Errors: SS_NOT_FOUND (root missing or expired, no such tab, or another client's tab),
--         SS_LIMIT (too many statuses, actions, scopes or notes, or too many bytes)
-- Writes: KEYS 1
local now = now_ms()
local life = tonumber(ARGV[2])
local key = KEYS[1]
local h = auth_root(key, life, now)
if h == nil then fail('SS_NOT_FOUND root authentication session not found') end
local f = 't:' .. ARGV[3]
if h[f] == nil then fail('SS_NOT_FOUND authentication session not found') end
local tab = cjson.decode(h[f])
if tab.c ~= ARGV[4] then fail('SS_NOT_FOUND authentication session not found') end
local ch = cjson.decode(ARGV[11])

for _, k in ipairs({'r', 'a', 'p', 'u'}) do
  if ch[k] ~= nil then
    if ch[k] == '' then tab[k] = nil else tab[k] = ch[k] end
  end
end

-- Apply (clear,) removes, then sets to one of the tab's maps; an empty map is not stored.
local function apply(name, clear, remove, set, limit, what)
  local m = tab[name] or {}
  if clear then m = {} end
  for _, n in ipairs(remove or {}) do m[n] = nil end
  for n, v in pairs(set or {}) do m[n] = v end
  local count = 0
  for _ in pairs(m) do count = count + 1 end
  if count > limit then fail('SS_LIMIT a tab holds at most ' .. limit .. ' ' .. what) end
  if count == 0 then tab[name] = nil else tab[name] = m end
end

-- A list of names as a set ({name: 1}).
local function as_set(list)
  local s = {}
  for _, n in ipairs(list or {}) do s[n] = 1 end
  return s
end

apply('x', false, ch.xc, ch.xs, tonumber(ARGV[6]), 'execution statuses')
apply('q', false, ch.qr, as_set(ch.qa), tonumber(ARGV[7]), 'required actions')
if ch.s ~= nil then apply('s', true, nil, as_set(ch.s), tonumber(ARGV[8]), 'client scopes') end
local max_notes = tonumber(ARGV[5])
apply('un', false, ch.unr, ch.uns, max_notes, 'user session notes')
apply('an', ch.anc, ch.anr, ch.ans, max_notes, 'auth notes')
apply('cn', false, ch.cnr, ch.cns, max_notes, 'client notes')

local json = cjson.encode(tab)
if #json > tonumber(ARGV[9]) then fail('SS_LIMIT a tab holds at most ' .. ARGV[9] .. ' bytes') end
if auth_root_bytes(h) - #h[f] + #json > tonumber(ARGV[10]) then
  fail('SS_LIMIT the root authentication session holds at most ' .. ARGV[10] .. ' bytes of tabs')
end
redis.call('HSET', key, f, json)
auth_root_touch(key, h, life, now)
return {ARGV[3], json}
