-- release_session_id: drop a pointer this service created, when the create it was for failed.
-- KEYS: 1 pointer (p:)
-- ARGV: 1 the partition it must still point at
-- Reply: 1 when deleted, else 0
-- Errors: none
-- Writes: KEYS 1
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
