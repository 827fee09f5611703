-- The per-key quota of running sessions (src/store/quota.rs), prepended to the scripts that
-- use it. `owners` is a sorted set of one owner's running session ids, each scored by its
-- expiry deadline in milliseconds of this server's clock; the set expires `ttl` after its
-- last change, when every deadline in it has passed.

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Counts `sid` until now + `ttl`, unless `owners` already holds `max` unexpired sessions.
-- A deadline equal to now is still running: Redis expires a key once now passes its time.
local function reserve(owners, sid, max, ttl)
  local now = server_ms()
  redis.call('ZREMRANGEBYSCORE', owners, '-inf', string.format('(%d', now))
  if redis.call('ZCARD', owners) >= tonumber(max) then return false end
  redis.call('ZADD', owners, now + tonumber(ttl), sid)
  redis.call('PEXPIRE', owners, ttl)
  return true
end

-- Pushes `sid`'s deadline to now + `ttl` after a write, if it is counted and unexpired.
local function refresh(owners, sid, ttl)
  local now = server_ms()
  local deadline = redis.call('ZSCORE', owners, sid)
  if deadline and tonumber(deadline) >= now then
    redis.call('ZADD', owners, now + tonumber(ttl), sid)
    redis.call('PEXPIRE', owners, ttl)
  end
end
