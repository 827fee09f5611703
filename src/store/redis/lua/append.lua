-- Appends a batch, HASH layout. KEYS: meta, events, idem, idem order [, owners]. ARGV: owner,
-- maxlen, ttl_ms, now_ms, channel, max_session_bytes, sid, idempotency key name ('' for
-- none), request digest, max keys, then kind/data pairs. Returns {'ok', id...}, the
-- recorded {'replayed', id...} (idempotency.lua), or
-- {'not_found'|'forbidden'|'key_reused'|'completed'|'too_large'}; a refusal writes nothing.
-- Publishes the notice (module docs): the id before comes from `XREVRANGE ... COUNT 1`
-- inside the script, so it is exact whoever wrote last. Each entry's `prev` field is the id
-- of the entry before it ('' for the first), so trimming never hides a gap (module docs).
local meta = redis.call('HMGET', KEYS[1], 'status', 'owner', 'bytes')
if not meta[1] then return {'not_found'} end
if meta[2] ~= ARGV[1] then return {'forbidden'} end
local replay = recorded(KEYS[3], ARGV[8], ARGV[9])
if replay then return replay end
if meta[1] ~= 'running' then return {'completed'} end
local bytes = 0
for i = 11, #ARGV, 2 do bytes = bytes + #ARGV[i] + #ARGV[i + 1] end
if (tonumber(meta[3]) or 0) + bytes > tonumber(ARGV[6]) then return {'too_large'} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
last = last[1] and last[1][1] or ''
local out, events, size, prev = {'ok'}, {}, 0, last
for i = 11, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
                        'kind', ARGV[i], 'data', ARGV[i + 1], 'prev', prev)
  prev = id
  out[#out + 1] = id
  events[#events + 1] = {id, ARGV[i], ARGV[i + 1]}
  size = size + #ARGV[i + 1]
end
redis.call('HINCRBY', KEYS[1], 'event_count', #out - 1)
redis.call('HINCRBY', KEYS[1], 'bytes', bytes)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
record(KEYS[3], KEYS[4], ARGV[8], ARGV[9], out, 2, ARGV[10])
keep(KEYS[3], KEYS[4], ARGV[3])
if KEYS[5] then refresh(KEYS[5], ARGV[7], ARGV[3]) end
if size <= 8192 then
  redis.call(PUBLISH, ARGV[5], cjson.encode({a = last, e = events}))
else
  redis.call(PUBLISH, ARGV[5], out[#out])
end
return out
