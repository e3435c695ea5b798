-- record_login_failure: count one failed login and apply Keycloak's brute-force rules
-- (DefaultBruteForceProtector.failure; model/brute_force.py states the same rules in Python).
-- The record hash holds nf (failures), nt (temporary lockouts), lf (last failure, epoch ms),
-- ip (last failure's IP), nb (failed-login not-before, epoch s); zero and empty fields are not stored.
-- KEYS: 1 record hash (lf:), 2 the realm's login-failure index of this partition (lfr:)
-- ARGV: 1 now ms ("" = TIME), 2 user id, 3 IP address ("" = none), 4 detection enabled (0/1),
--       5 permanent lockout (0/1), 6 max temporary lockouts, 7 strategy (0 multiple, 1 linear),
--       8 failure factor (> 0), 9 wait increment (s), 10 quick login check (ms),
--       11 minimum quick login wait (s), 12 max failure wait (s), 13 max delta time (s)
-- Reply: {failures, temporary lockouts, last failure ms, last IP, not-before s, now ms}
-- Errors: none
-- Writes: KEYS 1, 2
local now = now_ms()
local h = load_session(KEYS[1]) or {}
local nf, nt = tonumber(h.nf or '0'), tonumber(h.nt or '0')
local last, nb = tonumber(h.lf or '0'), tonumber(h.nb or '0')
local enabled, permanent = ARGV[4] == '1', ARGV[5] == '1'
local max_temp, factor, inc = tonumber(ARGV[6]), tonumber(ARGV[8]), tonumber(ARGV[9])
local quick_ms, min_quick = tonumber(ARGV[10]), tonumber(ARGV[11])
local max_wait, max_delta = tonumber(ARGV[12]), tonumber(ARGV[13])
local permanent_only = permanent and max_temp == 0

local delta = 0
if last > 0 then delta = now - last end
local lf = last
if not permanent_only and delta > 0 and delta > max_delta * 1000 then
  -- Keycloak clearFailures(), before this failure is recorded.
  nf, nt, nb, lf = 0, 0, 0, 0
end
lf = math.max(lf, now)
nf = nf + 1
if enabled then
  local wait = 0
  if not permanent_only then
    if ARGV[7] == '0' then wait = inc * math.floor(nf / factor) else wait = inc * (1 + nf - factor) end
  end
  local quick = false
  if wait <= 0 and last > 0 and delta < quick_ms then
    wait = min_quick
    quick = true
  end
  if wait > 0 then
    if not permanent_only then wait = math.min(max_wait, wait) end
    if not quick then nt = nt + 1 end
    if quick or not permanent or nt <= max_temp then
      nb = math.max(nb, math.min(math.floor(now / 1000) + wait, 2147483647))
    end
  end
end

local set, drop = {'nf', nf, 'lf', lf}, {}
local optional = {{'nt', nt, nt > 0}, {'nb', nb, nb > 0}, {'ip', ARGV[3], ARGV[3] ~= ''}}
for _, o in ipairs(optional) do
  if o[3] then
    set[#set + 1] = o[1]
    set[#set + 1] = o[2]
  else
    drop[#drop + 1] = o[1]
  end
end
redis.call('HSET', KEYS[1], unpack(set))
if #drop > 0 then redis.call('HDEL', KEYS[1], unpack(drop)) end
redis.call('SADD', KEYS[2], ARGV[2])
return {nf, nt, lf, ARGV[3], nb, now}
