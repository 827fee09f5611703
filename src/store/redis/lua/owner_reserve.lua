-- Cluster only: reserves a slot in the owner's quota before the session is created on its
-- own node. KEYS: owners. ARGV: ttl_ms, sid, max_active_sessions (init's first three).
-- Returns {'ok'} or {'quota'}.
if not reserve(KEYS[1], ARGV[2], ARGV[3], ARGV[1]) then return {'quota'} end
return {'ok'}
