-- Cluster only: pushes a session's deadline in its owner's quota back, alongside an append
-- on the session's own node. KEYS: owners. ARGV: ttl_ms, sid. Returns {'ok'}.
refresh(KEYS[1], ARGV[2], ARGV[1])
return {'ok'}
