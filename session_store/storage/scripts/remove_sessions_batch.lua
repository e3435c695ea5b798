-- remove_sessions_batch: one batch of a bulk removal in one partition: delete the given sessions
-- that the removal covers, with their index entries.
-- KEYS: 1 realm index (r:/ro:), 2 client index (c:/co:), 3..7 event keys, 8.. session hashes of the
--       ids in ARGV 20..
-- ARGV: HDR header (its realm marker says which sessions a whole-realm removal covers);
--       17 realm, 18 offline (0/1), 19 mode: "all" (started before the realm marker) or "expired"
--       (dead sessions Redis has not dropped yet), 20.. session ids (same order as KEYS 8..)
-- Reply: number of session hashes this call deleted (each session is counted by exactly one call)
-- Errors: none
-- Writes: every key (events: revoked (realm_removed), or expired when dead by its deadline)
local now = now_ms()
local p = policy()
local ridx, cidx = KEYS[1], KEYS[2]
local offline = ARGV[18] == '1'
local ek = event_keys(3)
local removed = 0
for i = 8, #KEYS do
  local sid = ARGV[HDR + i - 4]
  local h = load_session(KEYS[i])
  local covered = false
  if h == nil then
    redis.call('ZREM', ridx, sid)
    x_expire_if_due(ek, now, offline, sid)
  elseif h.realm == ARGV[17] then
    if ARGV[19] == 'all' then
      covered = tonumber(h.st) < p.not_before
    else
      covered = not session_status(p, h, offline, now)
    end
  end
  if covered then
    removed = removed + redis.call('DEL', KEYS[i])
    x_end(ek, now, offline, sid, dead_reason(p, h))
    redis.call('ZREM', ridx, sid)
    for f, _ in pairs(h) do
      if string.sub(f, 1, 2) == 'c:' then redis.call('ZREM', cidx, client_member(string.sub(f, 3), sid)) end
    end
  end
end
return removed
