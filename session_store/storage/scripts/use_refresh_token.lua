-- use_refresh_token: check, and record, one use of a refresh token on a client session (Keycloak §3:
-- TokenManager.validateToken's session checks, then validateTokenReuse and the use count).
-- KEYS: 1 session hash (s:/o:), 2 pointer, 3 realm index (r:/ro:), 4 client index (c:/co:),
--       5..9 event keys
-- ARGV: HDR header; 17 realm, 18 this partition, 19 offline (0/1), 20 client id, 21 token id (jti),
--       22 reuse id (the chain; "" for tokens issued before rotation was on), 23 token iat (s),
--       24 iat of the token this refresh issues (s, 0 = now), 25 introspect (0/1),
--       26 revoke refresh token (0/1), 27 refresh token max reuse, 28 startup time (s: chain records
--       older than this never flag a token stale), 29 most chains kept per client session,
--       30 append a `refreshed` event (0/1)
-- Rotation state lives in the client session JSON: rt = {reuse id: [token id, use count, last iat]}
-- (Keycloak's refreshToken / refreshTokenUse / refreshTokenLastRefresh notes of the chain).
-- Reply: {"ok", use count, client id, client session JSON, client deadline ms}, or, for a refresh
--        that failed rotation, {"rejected", "stale" | "reuse"} AFTER the client session was detached
--        (a normal reply: an error reply must not follow writes)
-- Errors (nothing written, but a dead session is ended first: event expired): SS_NOT_FOUND (user or client session missing or dead), SS_REDIRECT
--        <partition>, SS_RT_STALE (token issued before the session or client session started; or
--        stale when introspecting), SS_RT_REUSE (over-used, when introspecting)
-- Writes: KEYS 1, 3..9 on a refresh (nothing when introspecting but ending a dead session); on a
--         rejection KEYS 1, 4..9 (event: client_detached, reason refresh_token_reuse)
local now = now_ms()
local p = policy()
local key, ridx, cidx = KEYS[1], KEYS[3], KEYS[4]
local offline = ARGV[19] == '1'
local ek = event_keys(5)
local sid = sid_of(key)
local h = find_session(key, KEYS[2], ARGV[17], ARGV[18], function() x_expire_if_due(ek, now, offline, sid) end)
local alive, mx, idle = session_status(p, h, offline, now)
if not alive then
  x_expire_if_due(ek, now, offline, sid)
  fail('SS_NOT_FOUND session expired')
end
local cid, jti, rid = ARGV[20], ARGV[21], ARGV[22]
local f = 'c:' .. cid
local dl = expires_at(mx, idle)
local cs, cdl
for _, c in ipairs(live_clients(p, h, offline, mx, dl, now)) do
  if c[1] == cid then cs, cdl = c[2], c[3] end
end
if cs == nil then fail('SS_NOT_FOUND client session not found') end
local iat = tonumber(ARGV[23])
-- JsonWebToken.isIssuedBeforeSessionStart: one second of tolerance (iat + 1 < started).
if iat + 1 < tonumber(h.st) then fail('SS_RT_STALE token issued before the user session started') end
if iat + 1 < cs.s then fail('SS_RT_STALE token issued before the client session started') end
local introspect = ARGV[25] == '1'
local count = 0
local rt = cs.rt or {}
if ARGV[26] == '1' then
  local chain = rt[rid] or {}
  local seen, uses, last = chain[1], chain[2] or 0, chain[3] or 0
  local verdict = 'ok'
  if seen ~= nil and seen ~= jti and iat < last and tonumber(ARGV[28]) <= last then
    verdict = 'stale'
  elseif seen ~= jti and introspect then
    -- validateTokenReuse(refreshFlag = false): a token not seen yet is valid, nothing is reset.
    uses = 0
  else
    if seen ~= jti then seen, uses = jti, 0 end
    if uses > tonumber(ARGV[27]) then verdict = 'reuse' end
  end
  if verdict ~= 'ok' then
    if introspect then
      if verdict == 'stale' then fail('SS_RT_STALE a newer refresh token of this chain was used') end
      fail('SS_RT_REUSE the refresh token was used more often than allowed')
    end
    -- Keycloak detaches the client session on any rotation failure: every token of the client in this
    -- user session stops working, the newest included.
    redis.call('HDEL', key, f)
    redis.call('ZREM', cidx, client_member(cid, sid))
    h[f] = nil
    x_track(ek, offline, sid, h, mx, dl)
    emit(ek, now, 'client_detached', offline, sid, h.realm, h.user, {cid}, 'refresh_token_reuse', nil)
    return {'rejected', verdict}
  end
  count = uses
  if not introspect then
    count = uses + 1
    local new_iat = tonumber(ARGV[24])
    if new_iat <= 0 then new_iat = math.floor(now / 1000) end
    rt[rid] = {seen, count, new_iat}
    -- Bound the chains of one client session: drop the one refreshed longest ago (its next token is
    -- then treated as a chain's first use).
    local n, oldest = 0, nil
    for r, c in pairs(rt) do
      n = n + 1
      if r ~= rid and (oldest == nil or c[3] < rt[oldest][3]) then oldest = r end
    end
    if n > tonumber(ARGV[29]) and oldest ~= nil then rt[oldest] = nil end
    cs.rt = rt
  end
end
if introspect then return {'ok', count, cid, h[f], cdl} end
-- A refresh-token grant moves the client session's timestamp and the session's lastSessionRefresh to
-- the new token's iat (never into the shard's future, never backwards), as touch_user_session does.
local now_s = math.floor(now / 1000)
local at = tonumber(ARGV[24])
if at <= 0 or at > now_s then at = now_s end
if at > cs.t then cs.t = at end
if cs.n == nil or next(cs.n) == nil then cs.n = {} end
h[f] = cjson.encode(cs)
if at > tonumber(h.lr) then h.lr = tostring(at) end
redis.call('HSET', key, f, h[f], 'lr', h.lr)
mx, idle = select(2, session_status(p, h, offline, now))
dl = expires_at(mx, idle)
expire_at(key, dl, now)
index_add(ridx, dl, sid, now)
for _, c in ipairs(sync_clients(p, key, cidx, sid, h, offline, mx, dl, now)) do
  if c[1] == cid then cdl = c[3] end
end
x_track(ek, offline, sid, h, mx, dl)
if ARGV[30] == '1' then emit(ek, now, 'refreshed', offline, sid, h.realm, h.user, client_ids(h), nil, nil) end
return {'ok', count, cid, h[f], cdl}
