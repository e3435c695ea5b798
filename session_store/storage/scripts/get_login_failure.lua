-- get_login_failure: read a user's login-failure record (fields: see record_login_failure.lua).
-- KEYS: 1 record hash (lf:)
-- ARGV: 1 now ms ("" = TIME)
-- Reply: {failures, temporary lockouts, last failure ms, last IP, not-before s, now ms}
-- Errors: SS_NOT_FOUND (the user has no record)
-- Writes: nothing
local now = now_ms()
local h = load_session(KEYS[1])
if h == nil then fail('SS_NOT_FOUND no login failure recorded') end
return {tonumber(h.nf or '0'), tonumber(h.nt or '0'), tonumber(h.lf or '0'), h.ip or '', tonumber(h.nb or '0'), now}
