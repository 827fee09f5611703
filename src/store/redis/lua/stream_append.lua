-- POST: append and/or close, after the protocol's checks, in the reference order: closure
-- (a retry of the closing producer request is a duplicate), content type, producer,
-- Stream-Seq, size. Nothing is written unless every check passes. One call, atomic.
-- ARGV: 1 has data '0'/'1', 2 data, 3 content type essence ('' = none), 4 has seq, 5 seq,
--       6 has producer, 7 producer id, 8 epoch, 9 producer seq, 10 close '0'/'1',
--       11 max stream bytes, 12 max producers, 13 now ms, 14 notify channel
-- Reply: {'ok', tail, closed} | {'dup', tail, last seq, closed} | {'not_found'} | {'gone'} |
--        {'closed', tail} | {'ct', expected} | {'seq', last} | {'stale', epoch} |
--        {'epoch0'} | {'gap', expected, received} | {'too_large'}
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then
  return {'not_found'}
end
local m = redis.call('HMGET', meta, 'ct', 'ess', 'ttl', 'atms', 'closed', 'bytes', 'seq',
  'hasseq', 'cby', 'gone')
if m[10] == '1' then
  return {'gone'}
end
local bytes = tonumber(m[6])
local has_data = ARGV[1] == '1'
local has_producer = ARGV[6] == '1'
local tuple = ARGV[7] .. '\n' .. ARGV[8] .. '\n' .. ARGV[9]
if m[5] == '1' then
  if has_producer and m[9] == tuple then
    return {'dup', m[6], ARGV[9], '1'}
  end
  if not has_data and not has_producer then
    return {'ok', m[6], '1'}
  end
  return {'closed', m[6]}
end
if has_data and ARGV[3] ~= m[2] then
  return {'ct', m[1]}
end
local epoch = tonumber(ARGV[8])
local pseq = tonumber(ARGV[9])
if has_producer then
  local state = redis.call('HGET', KEYS[3], ARGV[7])
  if not state then
    if pseq ~= 0 then
      return {'gap', '0', ARGV[9]}
    end
  else
    local e, s = string.match(state, '^(%d+):(%d+):')
    e = tonumber(e)
    s = tonumber(s)
    if epoch < e then
      return {'stale', int(e)}
    elseif epoch > e then
      if pseq ~= 0 then
        return {'epoch0'}
      end
    elseif pseq <= s then
      return {'dup', m[6], int(s), '0'}
    elseif pseq ~= s + 1 then
      return {'gap', int(s + 1), ARGV[9]}
    end
  end
end
if ARGV[4] == '1' and m[8] == '1' and ARGV[5] <= m[7] then
  return {'seq', m[7]}
end
local size = 0
if has_data then
  size = string.len(ARGV[2])
  if bytes + size > tonumber(ARGV[11]) then
    return {'too_large'}
  end
end
-- Checks done: write.
if has_data then
  bytes = bytes + size
  redis.call('XADD', KEYS[2], int(bytes) .. '-1', 'd', ARGV[2])
  redis.call('HSET', meta, 'bytes', int(bytes))
end
if ARGV[4] == '1' then
  redis.call('HSET', meta, 'seq', ARGV[5], 'hasseq', '1')
end
if has_producer then
  if redis.call('HEXISTS', KEYS[3], ARGV[7]) == 0
    and redis.call('HLEN', KEYS[3]) >= tonumber(ARGV[12]) then
    -- Full: forget the producer idle longest.
    local all = redis.call('HGETALL', KEYS[3])
    local idle, oldest = nil, nil
    for i = 1, #all, 2 do
      local used = tonumber(string.match(all[i + 1], ':(%d+)$'))
      if oldest == nil or used < oldest then
        idle, oldest = all[i], used
      end
    end
    if idle then
      redis.call('HDEL', KEYS[3], idle)
    end
  end
  redis.call('HSET', KEYS[3], ARGV[7], ARGV[8] .. ':' .. ARGV[9] .. ':' .. ARGV[13])
end
local closed = m[5]
if ARGV[10] == '1' then
  closed = '1'
  local by = ''
  if has_producer then
    by = tuple
  end
  redis.call('HSET', meta, 'closed', '1', 'cby', by)
end
apply_expiry(m[3], m[4])
redis.call(PUBLISH, ARGV[14], '')
return {'ok', int(bytes), closed}
