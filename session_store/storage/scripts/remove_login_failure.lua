-- remove_login_failure: delete a user's login-failure record (Keycloak clearFailures after a
-- successful login, or removeUserLoginFailure when the user is deleted).
-- KEYS: 1 record hash (lf:), 2 the realm's login-failure index of this partition (lfr:)
-- ARGV: 1 now ms (unused), 2 user id
-- Reply: 1 when a record was deleted, else 0
-- Errors: none
-- Writes: KEYS 1, 2
redis.call('SREM', KEYS[2], ARGV[2])
return redis.call('DEL', KEYS[1])
