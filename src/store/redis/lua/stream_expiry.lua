-- Durable Streams: shared by the stream scripts (prepended to them).
-- KEYS[1] meta HASH, KEYS[2] data STREAM, KEYS[3] producers HASH, all tagged {ds-<hash>}.
-- Applies the stream's expiry (meta fields ttl / atms) to all three keys: a sliding TTL
-- is refreshed by every read and write; an absolute expiry is set once and stays.
local function apply_expiry(ttl, atms)
  for i = 1, 3 do
    if ttl ~= false and ttl ~= '' then
      redis.call('PEXPIRE', KEYS[i], tonumber(ttl) * 1000)
    elseif atms ~= false and atms ~= '' then
      redis.call('PEXPIREAT', KEYS[i], atms)
    end
  end
end

-- Integers print as integers (tostring would print 1e+14).
local function int(n)
  return string.format('%d', n)
end
