-- DELETE: the stream's keys (and a notice so its live readers learn it is gone); while
-- forks refer to it, only mark it deleted (soft delete).
-- ARGV: 1 notify channel.
-- Reply: {'missing'} | {'gone'} already soft-deleted | {'soft'} | {'removed', source path}
local m = redis.call('HMGET', KEYS[1], 'gone', 'refs', 'fsrc')
if not m[1] then
  return {'missing'}
end
if m[1] == '1' then
  return {'gone'}
end
redis.call(PUBLISH, ARGV[1], '')
if tonumber(m[2] or '0') > 0 then
  redis.call('HSET', KEYS[1], 'gone', '1')
  return {'soft'}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {'removed', m[3] or ''}
