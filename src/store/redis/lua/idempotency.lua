-- Idempotency keys (src/store/idempotency.rs), prepended to the append and complete scripts.
-- `idem` is a HASH of key name -> '<request digest> <id> <id> ...', `order` a LIST of the
-- names, oldest first; both live as long as the session. A name of '' means no key.

-- What `name` recorded: nil if nothing, else the script's reply: {'replayed', id...} for the
-- same request (`digest`), {'key_reused'} for another.
local function recorded(idem, name, digest)
  if name == '' then return nil end
  local record = redis.call('HGET', idem, name)
  if not record then return nil end
  local words = string.gmatch(record, '%S+')
  if words() ~= digest then return {'key_reused'} end
  -- Rewriting the record is a write, so a WAIT after this script (ack_replicas) covers the
  -- write replayed here even when that went through another connection or node.
  redis.call('HSET', idem, name, record)
  local out = {'replayed'}
  for id in words do out[#out + 1] = id end
  return out
end

-- Records the ids `reply[first..]` as the result of `digest` under `name`; past `max` names
-- the oldest is evicted.
local function record(idem, order, name, digest, reply, first, max)
  if name == '' then return end
  redis.call('HSET', idem, name, digest .. ' ' .. table.concat(reply, ' ', first))
  if redis.call('RPUSH', order, name) > tonumber(max) then
    redis.call('HDEL', idem, redis.call('LPOP', order))
  end
end

-- Gives the records the session's TTL `ttl` (a no-op while there are none).
local function keep(idem, order, ttl)
  redis.call('PEXPIRE', idem, ttl)
  redis.call('PEXPIRE', order, ttl)
end
