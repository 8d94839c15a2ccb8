-- Applies a change set to one session hash, atomically; or extends its TTL.
-- KEYS[1]: the session hash; KEYS[2]: the new hash when renewing, else absent.
-- ARGV: mode ('c' create, 'u' update, 't' touch), strict ('1' or '0'), TTL in ms, the moved
-- marker's TTL in ms, number of changes, then per change: field, op ('s' set, 'd' delete),
-- value, seen flag ('1' or '0'), seen value.
-- Returns 'saved', 'emptied', 'gone', 'moved', 'conflict' or 'taken'.
local key, target = KEYS[1], KEYS[2]
local mode, strict, ttl, marker_ttl, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
-- The field of the marker a renew leaves at the old key (a NUL-led name, which sessions
-- cannot use); the same name as MOVED_FIELD in redis.rs.
local MOVED = '\0moved'

-- A value seen at load that was not UTF-8 came to the app as '\0raw:' and its bytes in hex
-- (RAW_PREFIX in redis.rs): compare the bytes.
local function stored_form(seen)
  if seen:sub(1, 5) == '\0raw:' then
    return (seen:sub(6):gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end))
  end
  return seen
end

local kind = redis.call('TYPE', key).ok
if mode == 'c' then
  if kind ~= 'none' then return 'taken' end
else
  -- Nothing there, or something that is not a session hash: never written through.
  if kind ~= 'hash' then return 'gone' end
  if redis.call('HEXISTS', key, MOVED) == 1 then return 'moved' end
end
if mode == 't' then
  redis.call('PEXPIRE', key, ttl)
  return 'saved'
end
if target and redis.call('EXISTS', target) == 1 then return 'taken' end

if strict == '1' then
  for i = 0, n - 1 do
    local at = 6 + i * 5
    local current = redis.call('HGET', key, ARGV[at])
    if ARGV[at + 3] == '1' then
      if current ~= stored_form(ARGV[at + 4]) then return 'conflict' end
    elseif current then
      return 'conflict'
    end
  end
end

for i = 0, n - 1 do
  local at = 6 + i * 5
  if ARGV[at + 1] == 's' then
    redis.call('HSET', key, ARGV[at], ARGV[at + 2])
  else
    redis.call('HDEL', key, ARGV[at])
  end
end

-- Redis deletes a hash whose last field is removed.
if redis.call('EXISTS', key) == 0 then return 'emptied' end
if target then
  redis.call('RENAME', key, target)
  redis.call('PEXPIRE', target, ttl)
  redis.call('HSET', key, MOVED, '1')
  redis.call('PEXPIRE', key, marker_ttl)
  return 'saved'
end
redis.call('PEXPIRE', key, ttl)
return 'saved'
