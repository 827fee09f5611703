-- Completes, JSON layout (same KEYS, ARGV, reply and `prev` field as complete.lua).
local raw = redis.call('GET', KEYS[1])
if not raw then return {'not_found'} end
local state = cjson.decode(raw)
if state.owner ~= ARGV[1] then return {'forbidden'} end
local replay = recorded(KEYS[3], ARGV[10], ARGV[11])
if replay then return replay end
if state.status ~= 'running' then return {'completed'} end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'kind', 'complete',
                      'data', ARGV[8], 'prev', last[1] and last[1][1] or '')
state.status = ARGV[6]
state.completed_at = tonumber(ARGV[4])
state.updated_at = tonumber(ARGV[4])
state.final_response = ARGV[7]
state.event_count = state.event_count + 1
redis.call('SET', KEYS[1], cjson.encode(state), 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
record(KEYS[3], KEYS[4], ARGV[10], ARGV[11], {id}, 1, ARGV[12])
keep(KEYS[3], KEYS[4], ARGV[3])
if KEYS[5] then redis.call('ZREM', KEYS[5], ARGV[9]) end
redis.call(PUBLISH, ARGV[5], id)
return {'ok', id, tostring(state.created_at)}
