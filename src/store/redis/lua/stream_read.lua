-- GET / HEAD: the stream's configuration and the messages after an offset, at most about
-- max bytes of them (at least one). A read (not HEAD) refreshes a sliding TTL.
-- ARGV: 1 first message end to return ('' = none: metadata only), 2 max bytes,
--       3 max messages, 4 touch '0'/'1'
-- Reply: {} when missing, else {ct, ttl, atms, at, closed, tail, gone, end1, data1, ...}
local m = redis.call('HMGET', KEYS[1], 'ct', 'ttl', 'atms', 'at', 'closed', 'bytes', 'gone')
if not m[1] then
  return {}
end
local gone = m[7] or '0'
if ARGV[4] == '1' and gone ~= '1' then
  apply_expiry(m[2], false)
end
local out = {m[1], m[2], m[3], m[4], m[5], m[6], gone}
if gone == '1' then
  return out
end
if ARGV[1] ~= '' then
  local entries = redis.call('XRANGE', KEYS[2], ARGV[1] .. '-0', '+', 'COUNT', ARGV[3])
  local max = tonumber(ARGV[2])
  local taken = 0
  for _, entry in ipairs(entries) do
    local data = entry[2][2]
    if #out > 7 and taken + string.len(data) > max then
      break
    end
    taken = taken + string.len(data)
    out[#out + 1] = string.match(entry[1], '^(%d+)')
    out[#out + 1] = data
  end
end
return out
