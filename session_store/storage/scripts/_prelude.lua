-- _prelude.lua: shared by every script; the loader puts it in front of each script's body.
--
-- Common ARGV header (every script; positions 1..HDR):
--   1  now: epoch ms as a decimal string from the test clock, or "" to use the shard's TIME
--   2  idle (s)            3  lifespan (s)         4  idle remember-me (s)   5  lifespan remember-me (s)
--   6  remember-me allowed (0/1)                   7  client idle (s, 0=unset) 8 client max (s, 0=unset)
--   9  offline idle (s)    10 offline lifespan (s, -1 = none)               11 offline max enabled (0/1)
--   12 client offline idle (s)                     13 client offline max (s)
--   14 per-client overrides and removal markers: JSON {client: [idle, max, offline idle, offline max,
--      removed-before s], "": [realm removed-before s]} or ""
--   15 max notes per session or client session     16 max client sessions per user session
-- Errors (prefixes, mapped to exceptions in storage/_errors.py):
--   SS_NOT_FOUND, SS_EXISTS, SS_LIMIT, SS_REDIRECT <partition>, SS_STALE, SS_BAD_ARG,
--   SS_SESSION_LIMIT, SS_RT_STALE, SS_RT_REUSE, and from the ownership guard below: SS_MOVED
--   <partition> <epoch>, SS_FROZEN <partition>, SS_NO_MAP
--
-- Ownership guard (runs before every script body): the caller (storage/shard.py) appends two keys to
-- every call, the shard's ownership string `ss:own` (one byte per partition: '1' owned, '3' owned and
-- being copied out, '2' frozen for the last step of a move, '0' not owned; then ':' and the epoch of
-- the map it was last set from) and its move journal `ss:journal` (a set of key names). The guard
-- takes both off KEYS, so bodies see exactly the keys they were given, and checks the partition of
-- every hash-tagged key before any body runs: not owned -> SS_MOVED, frozen -> SS_FROZEN, no
-- ownership string at all (a new or wiped shard) -> SS_NO_MAP; keys of a partition being copied out
-- are added to the journal, so the mover re-copies what changed after its first pass.
local HDR = 16

-- Raise one of our error replies. Scripts check everything before their first write: Redis does not
-- roll back the writes of a script that fails part way.
local function fail(msg)
  error({err = msg})
end

local function now_ms()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function policy()
  local p = {
    idle = tonumber(ARGV[2]), life = tonumber(ARGV[3]),
    idle_rm = tonumber(ARGV[4]), life_rm = tonumber(ARGV[5]), rm_allowed = ARGV[6] == '1',
    c_idle = tonumber(ARGV[7]), c_max = tonumber(ARGV[8]),
    off_idle = tonumber(ARGV[9]), off_life = tonumber(ARGV[10]), off_max_on = ARGV[11] == '1',
    c_off_idle = tonumber(ARGV[12]), c_off_max = tonumber(ARGV[13]),
    max_notes = tonumber(ARGV[15]), max_clients = tonumber(ARGV[16]),
  }
  if ARGV[14] ~= '' then p.clients = cjson.decode(ARGV[14]) else p.clients = {} end
  -- The entry of the empty client id (no client can have it) is the realm's removal marker: sessions
  -- started before it were removed in bulk (RemoveSessions) and are dead before their batch runs.
  p.not_before = 0
  if p.clients[''] then p.not_before = p.clients[''][1] end
  return p
end

-- Keycloak §2.3: the (max, idle) deadlines of a user session in ms; max = -1 means none.
local function user_deadlines(p, offline, started, lr, rm)
  if offline then
    local mx = -1
    if p.off_life ~= -1 then mx = 1000 * (started + p.off_life) end
    return mx, 1000 * (lr + p.off_idle)
  end
  if rm then return 1000 * (started + p.life_rm), 1000 * (lr + p.idle_rm) end
  return 1000 * (started + p.life), 1000 * (lr + p.idle)
end

-- Keycloak §2.4: the (max, idle) deadlines of a client session; max capped by the user's max.
local function client_deadlines(p, offline, client_id, cs, rm, user_max)
  local ov = p.clients[client_id] or {0, 0, 0, 0}
  if offline then
    local mx = -1
    if p.off_max_on or ov[4] > 0 then
      local life = p.c_off_max
      if ov[4] > 0 then life = ov[4] end
      mx = 1000 * (cs.s + life)
      if user_max > 0 then mx = math.min(mx, user_max) end
    end
    local idle = p.c_off_idle
    if ov[3] > 0 then idle = ov[3] end
    return mx, 1000 * (cs.t + idle)
  end
  local life = p.life
  if rm then life = p.life_rm end
  if ov[2] > 0 then life = ov[2] elseif p.c_max > 0 then life = p.c_max end
  local idle = p.idle
  if rm then idle = p.idle_rm end
  if ov[1] > 0 then idle = ov[1] elseif p.c_idle > 0 then idle = p.c_idle end
  return math.min(1000 * (cs.s + life), user_max), 1000 * (cs.t + idle)
end

local function expires_at(mx, idle)
  if mx == -1 then return idle end
  return math.min(mx, idle)
end

local function is_alive(mx, idle, now)
  return idle > now and (mx == -1 or mx > now)
end

-- Load a session hash into a table of its fields, or nil when the key is missing.
local function load_session(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- The user session's deadlines and whether it is alive (remember-me needs the realm to allow it).
local function session_status(p, h, offline, now)
  local rm = h.rm == '1'
  local mx, idle = user_deadlines(p, offline, tonumber(h.st), tonumber(h.lr), rm)
  local alive = is_alive(mx, idle, now)
  if rm and not offline and not p.rm_allowed then alive = false end
  if tonumber(h.st) < p.not_before then alive = false end
  return alive, mx, idle
end

-- The live client sessions of a loaded session: list of {id, table, deadline}, plus dead field names.
local function live_clients(p, h, offline, user_max, user_dl, now)
  local live, dead = {}, {}
  local rm = h.rm == '1'
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) == 'c:' then
      local cid = string.sub(f, 3)
      local cs = cjson.decode(v)
      local mx, idle = client_deadlines(p, offline, cid, cs, rm, user_max)
      local ov = p.clients[cid]
      local removed = ov ~= nil and ov[5] ~= nil and cs.s < ov[5]
      if is_alive(mx, idle, now) and not removed then
        live[#live + 1] = {cid, cs, math.min(expires_at(mx, idle), user_dl)}
      else
        dead[#dead + 1] = f
      end
    end
  end
  return live, dead
end

local function client_member(cid, sid)
  return cid .. ' ' .. sid
end

-- Rewrite a session's client index entries (the client deadline is capped by the user deadline)
-- and drop dead client sessions from the hash and the index.
local function sync_clients(p, key, cidx, sid, h, offline, user_max, user_dl, now)
  local live, dead = live_clients(p, h, offline, user_max, user_dl, now)
  for _, f in ipairs(dead) do
    h[f] = nil
    redis.call('HDEL', key, f)
    redis.call('ZREM', cidx, client_member(string.sub(f, 3), sid))
  end
  for _, c in ipairs(live) do
    redis.call('ZADD', cidx, c[3], client_member(c[1], sid))
  end
  return live
end

-- Prune dead entries of a deadline-scored index and keep the index's own TTL past its last entry.
local function index_add(idx, score, member, now)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. now)
  redis.call('ZADD', idx, score, member)
  local last = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', idx, math.max(1, tonumber(last[2]) - now))
end

-- The session id in a session key (the part after ":s:" or ":o:").
local function sid_of(key)
  return string.match(key, ':[so]:(.*)$')
end

-- The reply for one live session:
-- {session id, expires_at_ms, {field, value, ...}, {client, deadline, ...}}.
local function session_reply(sid, h, dl, live)
  local flat, cdl = {}, {}
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) ~= 'c:' then
      flat[#flat + 1] = f
      flat[#flat + 1] = v
    end
  end
  for _, c in ipairs(live) do
    flat[#flat + 1] = 'c:' .. c[1]
    flat[#flat + 1] = cjson.encode(c[2])
    cdl[#cdl + 1] = c[1]
    cdl[#cdl + 1] = c[3]
  end
  return {sid, dl, flat, cdl}
end

-- Find the session for a by-id call: the session hash, else a redirect through the id's pointer.
-- Returns the loaded hash; raises SS_NOT_FOUND (also for another realm's session) or SS_REDIRECT.
-- `on_missing` (optional) runs before SS_NOT_FOUND for a missing hash (scripts that end the session
-- a dead hash stood for).
local function find_session(key, ptr, realm, here, on_missing)
  local h = load_session(key)
  if h == nil then
    local target = redis.call('GET', ptr)
    if target and target ~= here then fail('SS_REDIRECT ' .. target) end
    if on_missing then on_missing() end
    fail('SS_NOT_FOUND session not found')
  end
  if h.realm ~= realm then fail('SS_NOT_FOUND session not found') end
  return h
end

-- How many fields of a loaded hash start with a prefix ('n:' notes, 'c:' client sessions).
local function count_prefix(h, prefix)
  local n = 0
  for f, _ in pairs(h) do
    if string.sub(f, 1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

-- Expire a key at a deadline (relative to the script's clock, so a test clock works too).
local function expire_at(key, dl, now)
  redis.call('PEXPIRE', key, math.max(1, dl - now))
end

-- Authentication sessions (the *_auth_session scripts). A root is one hash: 'ts' (epoch s of its last
-- change), 'n' (tabs created so far: the creation order of the next tab), 't:<tab id>' (tab JSON).
-- It dies at (ts + lifespan) s: reads check that against now, so a root is dead on time even before
-- Redis drops the key (whose TTL is the same deadline).

-- A live root: its loaded hash and deadline (ms); nil when missing or expired.
local function auth_root(key, life, now)
  local h = load_session(key)
  if h == nil then return nil end
  local dl = 1000 * (tonumber(h.ts) + life)
  if dl <= now then return nil end
  return h, dl
end

-- Set a root's timestamp to now and its TTL to the new deadline; returns the deadline (ms).
local function auth_root_touch(key, h, life, now)
  h.ts = tostring(math.floor(now / 1000))
  local dl = 1000 * (tonumber(h.ts) + life)
  redis.call('HSET', key, 'ts', h.ts)
  expire_at(key, dl, now)
  return dl
end

-- The reply for a root: {timestamp s, deadline ms, {tab id, tab JSON, ...}}.
local function auth_root_reply(h, dl)
  local tabs = {}
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) == 't:' then
      tabs[#tabs + 1] = string.sub(f, 3)
      tabs[#tabs + 1] = v
    end
  end
  return {tonumber(h.ts), dl, tabs}
end

-- The bytes of a root's tabs (their JSON), to keep a root within one reply.
local function auth_root_bytes(h)
  local n = 0
  for f, v in pairs(h) do
    if string.sub(f, 1, 2) == 't:' then n = n + #v end
  end
  return n
end

-- Session limits (Keycloak §4, UserSessionLimitsAuthenticator), shared by create_user_session and
-- attach_client_session. The caller passes the ids it believes the user's index holds (ARGV from
-- `first_arg`) with their session hashes (KEYS from `first_key`, same order).

-- The index members when one of them was not passed (the caller retries with them), else nil.
-- Passed ids the index no longer holds are harmless: every hash is verified on its own.
local function stale_user_index(uidx, first_arg)
  local members = redis.call('ZRANGE', uidx, 0, -1)
  local passed = {}
  for i = first_arg, #ARGV do passed[ARGV[i]] = true end
  for _, m in ipairs(members) do
    if not passed[m] then
      table.insert(members, 1, 'stale')
      return members
    end
  end
  return nil
end

-- Whether a loaded session has a live client session for a client.
local function has_live_client(p, h, offline, user_max, user_dl, now, cid)
  if h['c:' .. cid] == nil then return false end
  for _, c in ipairs(live_clients(p, h, offline, user_max, user_dl, now)) do
    if c[1] == cid then return true end
  end
  return false
end

-- The user's live online sessions among the passed keys, except `skip_sid`: a list of
-- {sid =, key =, h =, lr =, st =, client = has a live client session for `cid`}, and the passed ids
-- that are not (any more) a live session of this user in this realm (to prune from the index).
local function user_sessions(p, realm, user, first_key, first_arg, now, cid, skip_sid)
  local live, gone = {}, {}
  for i = first_key, #KEYS do
    local sid = ARGV[first_arg + i - first_key]
    if sid ~= skip_sid then
      local h = load_session(KEYS[i])
      local ok = false
      if h ~= nil and h.realm == realm and h.user == user then
        local alive, mx, idle = session_status(p, h, false, now)
        if alive then
          ok = true
          live[#live + 1] = {sid = sid, key = KEYS[i], h = h, lr = tonumber(h.lr), st = tonumber(h.st),
            client = cid ~= '' and has_live_client(p, h, false, mx, expires_at(mx, idle), now, cid)}
        end
      end
      if not ok then gone[#gone + 1] = sid end
    end
  end
  return live, gone
end

-- The `count - (limit - 1)` oldest sessions (ascending lastSessionRefresh; ties: started, then id),
-- none when that is not positive (Keycloak logoutOldestSessions with its negative-count fix).
local function oldest_sessions(list, limit)
  local sorted = {}
  for i, s in ipairs(list) do sorted[i] = s end
  table.sort(sorted, function(a, b)
    if a.lr ~= b.lr then return a.lr < b.lr end
    if a.st ~= b.st then return a.st < b.st end
    return a.sid < b.sid
  end)
  local out = {}
  for i = 1, #list - (limit - 1) do out[i] = sorted[i] end
  return out
end

-- Keycloak's decision for a login: the sessions to terminate ({} when within the limits), or nil
-- when the behaviour is "deny new session" and a limit is reached. A limit <= 0 is off.
-- `sessions` are the user's other live online sessions (see user_sessions).
local function limit_victims(sessions, realm_limit, client_limit, new_user_session, terminate)
  local function exceeds(count, limit) return limit > 0 and count >= limit end
  local with_client = {}
  if client_limit > 0 then
    for _, s in ipairs(sessions) do
      if s.client then with_client[#with_client + 1] = s end
    end
  end
  if new_user_session and exceeds(#sessions, realm_limit) then
    if not terminate then return nil end
    -- The client limit first, then the realm limit over the sessions that are left.
    local victims, taken = {}, {}
    if client_limit > 0 then
      for _, s in ipairs(oldest_sessions(with_client, client_limit)) do
        victims[#victims + 1] = s
        taken[s.sid] = true
      end
    end
    if exceeds(#sessions - #victims, realm_limit) then
      local rest = {}
      for _, s in ipairs(sessions) do
        if not taken[s.sid] then rest[#rest + 1] = s end
      end
      for _, s in ipairs(oldest_sessions(rest, realm_limit)) do victims[#victims + 1] = s end
    end
    return victims
  end
  if exceeds(#with_client, client_limit) then
    if not terminate then return nil end
    return oldest_sessions(with_client, client_limit)
  end
  return {}
end

-- Terminate (log out) sessions of a user: delete them with their index entries; returns their ids.
local function terminate_sessions(victims, uidx, ridx, cidx)
  local ids = {}
  for _, s in ipairs(victims) do
    redis.call('DEL', s.key)
    redis.call('ZREM', uidx, s.sid)
    redis.call('ZREM', ridx, s.sid)
    for f, _ in pairs(s.h) do
      if string.sub(f, 1, 2) == 'c:' then redis.call('ZREM', cidx, client_member(string.sub(f, 3), s.sid)) end
    end
    ids[#ids + 1] = s.sid
  end
  return ids
end

-- Events (DESIGN invariant 6). A session is "begun" in its partition's expiry index (x: member
-- "s <id>"/"o <id>" -> deadline ms, with xm: member -> what an event needs) by the script that
-- creates it, and "ended" by whichever script removes it from there first: a logout, a revoke, a
-- limit eviction, a bulk removal, the sweeper, a read that finds it dead. Only the call that removes
-- the member appends the ending event, so every session ends exactly once. Scripts that take part
-- get the event keys block (storage/keys.event_keys): x, xm, due, the shard's stream, its counters.

-- The partition (three hex digits) of a partitioned key in either layout (storage/keys.py):
-- standalone `ss:{abc}:...`, or grouped for a Redis Cluster, `ss:{a}bc:...` / `ss:{ab}c:...`; nil for
-- any other key (the per-shard ones, `ss:events` or grouped `ss:{a}:events`).
local function key_partition(k)
  if string.sub(k, 1, 4) ~= 'ss:{' then return nil end
  if string.sub(k, 8, 9) == '}:' then return string.sub(k, 5, 7) end
  local tag, rest = string.match(k, '^ss:{(%x%x?)}(%x%x?):')
  if tag and #tag + #rest == 3 then return tag .. rest end
  return nil
end

local function event_keys(first)
  local x = KEYS[first]
  return {x = x, xm = KEYS[first + 1], due = KEYS[first + 2], ev = KEYS[first + 3], n = KEYS[first + 4],
    part = key_partition(x)}
end

local function x_member(offline, sid)
  if offline then return 'o ' .. sid end
  return 's ' .. sid
end

-- Append one event to the shard's stream and count it. `clients` is a list of client ids.
local function emit(ek, now, etype, offline, sid, realm, user, clients, why, deadline)
  local f = {'t', etype, 'r', realm, 'u', user, 's', sid}
  if offline then
    f[#f + 1] = 'o'
    f[#f + 1] = '1'
  end
  if clients and #clients > 0 then
    f[#f + 1] = 'c'
    f[#f + 1] = cjson.encode(clients)
  end
  if why then
    f[#f + 1] = 'why'
    f[#f + 1] = why
  end
  f[#f + 1] = 'at'
  f[#f + 1] = now
  if deadline then
    f[#f + 1] = 'dl'
    f[#f + 1] = deadline
  end
  redis.call('XADD', ek.ev, '*', unpack(f))
  redis.call('HINCRBY', ek.n, 'e:' .. etype, 1)
end

-- The live client ids of a session hash, sorted (client sessions dead by their own deadline drop
-- out at the session's next write).
local function client_ids(h)
  local ids = {}
  for f, _ in pairs(h) do
    if string.sub(f, 1, 2) == 'c:' then ids[#ids + 1] = string.sub(f, 3) end
  end
  table.sort(ids)
  return ids
end

local function count_key(offline, realm)
  if offline then return 'o:' .. realm end
  return 's:' .. realm
end

-- Record (or move) a session's deadline and event data; the sweeper learns of it through `due`.
local function x_track(ek, offline, sid, h, mx, dl)
  local m = x_member(offline, sid)
  redis.call('ZADD', ek.x, dl, m)
  redis.call('HSET', ek.xm, m, cjson.encode({r = h.realm, u = h.user, m = mx, c = client_ids(h)}))
  redis.call('ZADD', ek.due, 'LT', dl, ek.part)
end

-- End a session in the expiry index. Returns nil when it had ended already (another path won);
-- else the event type appended: `etype` with `why`, or 'expired' when its deadline has passed.
local function x_end(ek, now, offline, sid, etype, why)
  local m = x_member(offline, sid)
  local score = redis.call('ZSCORE', ek.x, m)
  if not score then return nil end
  score = tonumber(score)
  local meta = cjson.decode(redis.call('HGET', ek.xm, m) or '{"r":"","u":"","m":-1,"c":[]}')
  local deadline
  if score <= now then
    etype, deadline = 'expired', score
    if meta.m ~= -1 and meta.m <= score then why = 'max' else why = 'idle' end
  end
  redis.call('ZREM', ek.x, m)
  redis.call('HDEL', ek.xm, m)
  local ck = count_key(offline, meta.r)
  if redis.call('HINCRBY', ek.n, ck, -1) <= 0 then redis.call('HDEL', ek.n, ck) end
  emit(ek, now, etype, offline, sid, meta.r, meta.u, meta.c, why, deadline)
  return etype
end

-- A read or write that finds a session dead by its deadline ends it (the third path to expiry).
local function x_expire_if_due(ek, now, offline, sid)
  local score = redis.call('ZSCORE', ek.x, x_member(offline, sid))
  if score and tonumber(score) <= now then x_end(ek, now, offline, sid, 'expired', nil) end
end

-- Begin a session: end a dead predecessor with the same id first (its event must not be lost),
-- count it, record its deadline and append `created`.
local function x_begin(ek, now, offline, sid, h, mx, dl)
  x_expire_if_due(ek, now, offline, sid)
  x_track(ek, offline, sid, h, mx, dl)
  redis.call('HINCRBY', ek.n, count_key(offline, h.realm), 1)
  emit(ek, now, 'created', offline, sid, h.realm, h.user, client_ids(h), nil, nil)
end

-- The ending of a session that a script found dead before its deadline: removed in bulk (its
-- batch has not run yet) or remember-me no longer allowed by the realm.
local function dead_reason(p, h)
  if tonumber(h.st) < p.not_before then return 'revoked', 'realm_removed' end
  return 'expired', 'remember_me'
end

-- Terminate sessions for a limit (Keycloak logs the oldest out): each ends as revoked (limit).
local function end_victims(ek, now, victims)
  for _, s in ipairs(victims) do x_end(ek, now, false, s.sid, 'revoked', 'limit') end
end

-- A hint zset lives as long as its latest member (its score is an absolute ms deadline, or inf).
local function hint_expiry(key, now)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] == 'inf' then redis.call('PERSIST', key)
  else redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now)) end
end

-- The ownership guard (see the header); every body runs after it.
do
  local journal = table.remove(KEYS)
  local own = table.remove(KEYS)
  local state = {}
  for i = 1, #KEYS do
    local k = KEYS[i]
    local hex = key_partition(k)
    if hex then
      local b = state[hex]
      if b == nil then
        local p = tonumber(hex, 16)
        b = redis.call('GETRANGE', own, p, p)
        if b == '' then error({err = 'SS_NO_MAP'}) end
        if b == '0' then
          local epoch = redis.call('GETRANGE', own, 4097, -1)
          error({err = 'SS_MOVED ' .. p .. ' ' .. epoch})
        end
        if b == '2' or b == '4' then error({err = 'SS_FROZEN ' .. p}) end
        state[hex] = b
      end
      if b == '3' then redis.call('SADD', journal, k) end
    end
  end
end
