-- Creates a session, HASH layout. KEYS: meta [, owners]. ARGV: ttl_ms, sid,
-- max_active_sessions, owner, metadata, now_ms. Returns {'ok'} or {'quota'}.
-- Without KEYS[2] (Cluster: another slot) the caller has reserved the quota slot.
if KEYS[2] and not reserve(KEYS[2], ARGV[2], ARGV[3], ARGV[1]) then return {'quota'} end
redis.call('HSET', KEYS[1], 'status', 'running', 'created_at', ARGV[6],
           'updated_at', ARGV[6], 'owner', ARGV[4], 'metadata', ARGV[5], 'event_count', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {'ok'}
