-- Completes, HASH layout. KEYS: meta, events, idem, idem order [, owners]. ARGV: owner,
-- maxlen, retention_ms, now_ms, channel, status, final_response, complete-event data, sid,
-- idempotency key name ('' for none), request digest, max keys. Returns
-- {'ok', id, created_at}, the recorded {'replayed', id} or an error word. Frees the
-- session's quota slot. The entry's `prev` is the id before it, as in append.lua.
local meta = redis.call('HMGET', KEYS[1], 'status', 'owner', 'created_at')
if not meta[1] then return {'not_found'} end
if meta[2] ~= ARGV[1] then return {'forbidden'} end
local replay = recorded(KEYS[3], ARGV[10], ARGV[11])
if replay then return replay end
if meta[1] ~= 'running' then return {'completed'} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
last = last[1] and last[1][1] or ''
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
                      'kind', 'complete', 'data', ARGV[8], 'prev', last)
redis.call('HSET', KEYS[1], 'status', ARGV[6], 'completed_at', ARGV[4],
           'updated_at', ARGV[4], 'final_response', ARGV[7])
redis.call('HINCRBY', KEYS[1], 'event_count', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
record(KEYS[3], KEYS[4], ARGV[10], ARGV[11], {id}, 1, ARGV[12])
keep(KEYS[3], KEYS[4], ARGV[3])
if KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[9]) end
if #ARGV[8] <= 8192 then
  local events = {{id, 'complete', ARGV[8]}}
  redis.call(PUBLISH, ARGV[5], cjson.encode({a = last, e = events}))
else
  redis.call(PUBLISH, ARGV[5], id)
end
return {'ok', id, meta[3] or '0'}
