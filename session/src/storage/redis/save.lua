-- Applies a change set to one session hash, atomically; or extends its TTL.
-- KEYS[1]: the session hash; KEYS[2]: the new hash when renewing in one step ('u'), the
-- parked copy for 'o' and 'b' (a key in KEYS[1]'s Cluster slot), else absent.
-- ARGV: mode, strict ('1' or '0'), TTL in ms, the moved marker's TTL in ms, number of changes,
-- then per change: field, op ('s' set, 'd' delete), value, seen flag ('1' or '0'), seen value.
-- Modes:
--   'f' fast update, for a last-write-wins change set that only sets keys; ARGV is 'f', the
--       TTL in ms, then field and value pairs.
--   'c' create: only where nothing is stored.
--   'u' update: only a session hash that still exists; with KEYS[2], also move it there
--       (a renew) and leave the moved marker.
--   't' touch: extend the TTL of a session hash.
--   'o' move out (the first step of a renew on a Cluster, where the new key lives on
--       another node): park a copy of the session as it is (with the time it has left, in
--       the reserved field PTTL_FIELD) at KEYS[2] for the marker's TTL, update, then return
--       the session's fields and leave the marker.
--   'b' back: put the parked copy back where it was (the second step of a Cluster renew
--       failed or its outcome is unknown), only over its own marker; else drop the copy.
-- Returns 'saved', 'emptied', 'gone', 'moved', 'conflict' or 'taken'; mode 'o' returns a
-- table: that status, then, for 'saved', the session's fields and values after the changes.
--
-- The moved marker a renew leaves at the old key is a string (MOVED below; MOVED_MARKER in
-- redis.rs), not a hash: a hash command on it fails, so the common update needs no check
-- of its own for it.
-- The fast path, for a last-write-wins update that only sets keys (the common change: a
-- counter, a flag): HSET, then PEXPIRE, first in the script so that it runs nothing else.
-- HSET fails (WRONGTYPE) on a marker or a value of another type; and it creates a hash that did not
-- exist, which its own answer tells (the hash then holds exactly the fields it added), and
-- which is deleted again at once: no resurrection.
if ARGV[1] == 'f' then
  local key = KEYS[1]
  local added = redis.pcall('HSET', key, unpack(ARGV, 3))
  if type(added) == 'table' then
    -- Any other error (out of memory, a read-only replica, an ACL) goes to the client.
    if not string.find(added.err, '^WRONGTYPE') then return added end
    if redis.pcall('GET', key) == '\0moved' then return 'moved' end
    return 'gone'
  end
  if added > 0 and redis.call('HLEN', key) == added then
    redis.call('DEL', key)
    return 'gone'
  end
  redis.call('PEXPIRE', key, ARGV[2])
  return 'saved'
end

local key = KEYS[1]
local mode, strict, ttl, marker_ttl, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local target, parked = nil, nil
if mode == 'u' then target = KEYS[2] else parked = KEYS[2] end
local MOVED = '\0moved'
local PTTL_FIELD = '\0pttl'

local function done(status)
  if mode == 'o' then return {status} end
  return status
end

-- What a key that is not a session hash is: the marker of a renewed session, or nothing
-- (or data of another kind, never written through).
local function not_a_session()
  local value = redis.pcall('GET', key)
  if value == MOVED then return done('moved') end
  return done('gone')
end

-- A value seen at load that was not UTF-8 came to the app as '\0raw:' and its bytes in hex
-- (RAW_PREFIX in redis.rs): compare the bytes.
local function stored_form(seen)
  if seen:sub(1, 5) == '\0raw:' then
    return (seen:sub(6):gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end))
  end
  return seen
end

local function apply_changes()
  for i = 0, n - 1 do
    local at = 6 + i * 5
    if ARGV[at + 1] == 's' then
      redis.call('HSET', key, ARGV[at], ARGV[at + 2])
    else
      redis.call('HDEL', key, ARGV[at])
    end
  end
end

local kind = redis.call('TYPE', key).ok
if mode == 'b' then
  if kind == 'string' and redis.call('GET', key) == MOVED
      and redis.call('TYPE', parked).ok == 'hash' then
    local left = tonumber(redis.call('HGET', parked, PTTL_FIELD))
    redis.call('HDEL', parked, PTTL_FIELD)
    redis.call('RENAME', parked, key)
    if left and left > 0 then
      redis.call('PEXPIRE', key, left)
    else
      redis.call('PERSIST', key)
    end
    return 'saved'
  end
  -- Purged meanwhile, or put back already: the copy goes.
  redis.call('DEL', parked)
  return 'gone'
end
if mode == 'c' then
  if kind ~= 'none' then return 'taken' end
elseif kind ~= 'hash' then
  return not_a_session()
end
if mode == 't' then
  redis.call('PEXPIRE', key, ttl)
  return 'saved'
end
if target and redis.call('EXISTS', target) == 1 then return 'taken' end

if strict == '1' then
  for i = 0, n - 1 do
    local at = 6 + i * 5
    -- Fields that start with NUL are the middleware's bookkeeping: never checked.
    local checked = ARGV[at]:byte(1) ~= 0
    local current = checked and redis.call('HGET', key, ARGV[at])
    if not checked then
      -- The last write sets it.
    elseif ARGV[at + 3] == '1' then
      if current ~= stored_form(ARGV[at + 4]) then return done('conflict') end
    elseif current then
      return done('conflict')
    end
  end
end

if mode == 'o' then
  redis.call('COPY', key, parked, 'REPLACE')
  redis.call('HSET', parked, PTTL_FIELD, redis.call('PTTL', key))
  redis.call('PEXPIRE', parked, marker_ttl)
end
apply_changes()

-- Redis deletes a hash whose last field is removed.
if redis.call('EXISTS', key) == 0 then
  if parked then redis.call('DEL', parked) end
  return done('emptied')
end
if mode == 'o' then
  local out = {'saved'}
  for _, item in ipairs(redis.call('HGETALL', key)) do out[#out + 1] = item end
  redis.call('SET', key, MOVED, 'PX', marker_ttl)
  return out
end
if target then
  redis.call('RENAME', key, target)
  redis.call('PEXPIRE', target, ttl)
  redis.call('SET', key, MOVED, 'PX', marker_ttl)
  return 'saved'
end
redis.call('PEXPIRE', key, ttl)
return 'saved'
