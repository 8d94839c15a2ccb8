-- The JSON layout (RedisLayout::Json in redis.rs): a session is one string at its key, a
-- JSON object, as sanic_session stores it. The store reads it, merges a change set in, and
-- writes it here only if the string is still the one it read: a compare-and-set on the
-- whole value, so concurrent saves of different keys all persist, each applied to the
-- other's result, and a session deleted meanwhile stays deleted.
-- KEYS[1]: the session's key; KEYS[2]: for a renew, the new key.
-- ARGV[1], the mode:
--   'w' write: ARGV[2] the value read, ARGV[3] the new value, ARGV[4] the TTL in ms.
--   'e' emptied: ARGV[2] the value read; the session is deleted.
--   'r' renew: as 'w', the new value going to KEYS[2], which must be free, ARGV[5] the moved
--       marker's TTL in ms; KEYS[1] becomes the marker.
--   't' touch: ARGV[2] the TTL in ms.
-- Returns 'saved', 'emptied', 'gone', 'moved', 'taken', or 'lost': the value changed since
-- it was read (read it again).
--
-- The moved marker (MOVED; MOVED_MARKER in json_record.rs) is itself a JSON object, with one
-- key no app can set: a sanic_session app that meets it reads a session without its keys
-- rather than failing on a value that is not JSON.
local key = KEYS[1]
local mode = ARGV[1]
local MOVED = '{"\\u0000moved":1}'

if mode == 't' then
  -- Not the whole value: a touch runs on requests that only read.
  if redis.call('TYPE', key).ok ~= 'string' then return 'gone' end
  -- Not a JSON object: nothing this layout wrote.
  if redis.call('GETRANGE', key, 0, 0) ~= '{' then return 'gone' end
  if redis.call('STRLEN', key) == #MOVED and redis.call('GET', key) == MOVED then
    return 'moved'
  end
  redis.call('PEXPIRE', key, ARGV[2])
  return 'saved'
end

local current = redis.pcall('GET', key)
if type(current) == 'table' then
  -- A key of another type was never a session of this layout.
  if string.find(current.err, '^WRONGTYPE') then return 'gone' end
  return current
end
if current == false then return 'gone' end
if current == MOVED then return 'moved' end
if current ~= ARGV[2] then return 'lost' end
if mode == 'e' then
  redis.call('DEL', key)
  return 'emptied'
end
if mode == 'w' then
  redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
  return 'saved'
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'taken' end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SET', key, MOVED, 'PX', ARGV[5])
return 'saved'
