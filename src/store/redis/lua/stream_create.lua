-- PUT: create the stream, or confirm an identical one. One call, atomic.
-- ARGV: 1 content type ('' = a fork inheriting its source's), 2 its essence, 3 ttl secs or
--       '', 4 expires-at ms or '', 5 expires-at text or '', 6 closed '0'/'1',
--       7 has data '0'/'1', 8 data, 9 max stream bytes, 10 notify channel,
--       11 fork source path ('' = no fork), 12 fork offset asked ('' = the tail),
--       13 fork point (bytes), 14 fork sub-offset, 15 inherited bytes,
--       16 'inherit-ct' when a fork asked no content type (ARGV 1-2 are its source's),
--       17 'inherit-expiry' when a fork asked no expiry (ARGV 3-5 are its source's),
--       18.. the inherited messages, as pairs (end offset, data)
-- Reply: {'ok', tail} created | {'exists', tail, content type, closed} | {'conflict'} |
--        {'too_large'} | {'gone'}
local meta = KEYS[1]
local fork = ARGV[11] ~= ''
if redis.call('EXISTS', meta) == 1 then
  local cur = redis.call('HMGET', meta, 'ess', 'ttl', 'at', 'closed', 'bytes', 'ct', 'gone',
    'fsrc', 'fanchor', 'fsub')
  if cur[7] == '1' then
    return {'gone'}
  end
  local fork_same = (cur[8] or '') == ARGV[11]
  if fork then
    fork_same = fork_same and (ARGV[12] == '' or ARGV[12] == cur[9]) and cur[10] == ARGV[14]
  end
  local ct_same = cur[1] == ARGV[2] or (fork and ARGV[16] == 'inherit-ct')
  local expiry_same = (cur[2] == ARGV[3] and cur[3] == ARGV[5])
    or (fork and ARGV[17] == 'inherit-expiry')
  if fork_same and ct_same and expiry_same and cur[4] == ARGV[6] then
    return {'exists', cur[5], cur[6], cur[4]}
  end
  return {'conflict'}
end
local bytes = tonumber(ARGV[15])
local size = bytes
if ARGV[7] == '1' then
  size = size + string.len(ARGV[8])
end
if size > tonumber(ARGV[9]) then
  return {'too_large'}
end
for i = 18, #ARGV, 2 do
  redis.call('XADD', KEYS[2], ARGV[i] .. '-1', 'd', ARGV[i + 1])
end
if ARGV[7] == '1' then
  bytes = bytes + string.len(ARGV[8])
  redis.call('XADD', KEYS[2], int(bytes) .. '-1', 'd', ARGV[8])
end
redis.call('HSET', meta, 'ct', ARGV[1], 'ess', ARGV[2], 'ttl', ARGV[3], 'atms', ARGV[4],
  'at', ARGV[5], 'closed', ARGV[6], 'bytes', int(bytes), 'seq', '', 'hasseq', '0', 'cby', '',
  'fsrc', ARGV[11], 'fanchor', ARGV[13], 'fsub', ARGV[14], 'refs', '0', 'gone', '0')
apply_expiry(ARGV[3], ARGV[4])
redis.call(PUBLISH, ARGV[10], '')
return {'ok', int(bytes)}
