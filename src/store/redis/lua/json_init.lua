-- Creates a session, JSON layout. KEYS: meta [, owners]. ARGV: ttl_ms, sid,
-- max_active_sessions, state JSON. Returns {'ok'} or {'quota'}.
if KEYS[2] and not reserve(KEYS[2], ARGV[2], ARGV[3], ARGV[1]) then return {'quota'} end
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[1])
return {'ok'}
