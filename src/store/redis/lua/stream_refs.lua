-- A fork of this stream was created (ARGV[1] = '1') or deleted ('-1'). A soft-deleted
-- stream whose last fork went is removed; its own source is then released by the caller.
-- Reply: {'ok'} | {'removed', source path}
local m = redis.call('HMGET', KEYS[1], 'gone', 'fsrc')
if not m[1] then
  return {'ok'}
end
local refs = redis.call('HINCRBY', KEYS[1], 'refs', ARGV[1])
if m[1] == '1' and refs <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return {'removed', m[2] or ''}
end
return {'ok'}
