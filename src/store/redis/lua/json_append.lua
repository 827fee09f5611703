-- Appends a batch, JSON layout (same KEYS, ARGV, reply and `prev` fields as append.lua).
-- cjson prints numbers with 14 significant digits: exact for millisecond timestamps and
-- counts below 10^14.
local raw = redis.call('GET', KEYS[1])
if not raw then return {'not_found'} end
local state = cjson.decode(raw)
if state.owner ~= ARGV[1] then return {'forbidden'} end
local replay = recorded(KEYS[3], ARGV[8], ARGV[9])
if replay then return replay end
if state.status ~= 'running' then return {'completed'} end
local bytes = 0
for i = 11, #ARGV, 2 do bytes = bytes + #ARGV[i] + #ARGV[i + 1] end
if (state.bytes or 0) + bytes > tonumber(ARGV[6]) then return {'too_large'} end
local out = {'ok'}
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local prev = last[1] and last[1][1] or ''
for i = 11, #ARGV, 2 do
  prev = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
                    'kind', ARGV[i], 'data', ARGV[i + 1], 'prev', prev)
  out[#out + 1] = prev
end
state.event_count = state.event_count + #out - 1
state.bytes = (state.bytes or 0) + bytes
state.updated_at = tonumber(ARGV[4])
redis.call('SET', KEYS[1], cjson.encode(state), 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
record(KEYS[3], KEYS[4], ARGV[8], ARGV[9], out, 2, ARGV[10])
keep(KEYS[3], KEYS[4], ARGV[3])
if KEYS[5] then refresh(KEYS[5], ARGV[7], ARGV[3]) end
redis.call(PUBLISH, ARGV[5], out[#out])
return out
