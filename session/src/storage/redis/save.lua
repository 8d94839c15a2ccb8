-- Applies a change set to one session hash, atomically.
-- KEYS[1]: the session hash; KEYS[2]: the new hash when renewing, else absent.
-- ARGV: mode ('c' create, 'u' update), strict ('1' or '0'), TTL in ms, number of changes,
-- then per change: field, op ('s' set, 'd' delete), value, seen flag ('1' or '0'), seen value.
-- Returns 'saved', 'emptied', 'gone', 'conflict' or 'taken'.
local key, target = KEYS[1], KEYS[2]
local mode, strict, ttl, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local exists = redis.call('EXISTS', key) == 1
if mode == 'c' and exists then return 'taken' end
if mode == 'u' and not exists then return 'gone' end
if target and redis.call('EXISTS', target) == 1 then return 'taken' end

if strict == '1' then
  for i = 0, n - 1 do
    local at = 5 + i * 5
    local current = redis.call('HGET', key, ARGV[at])
    if ARGV[at + 3] == '1' then
      if current ~= ARGV[at + 4] then return 'conflict' end
    elseif current then
      return 'conflict'
    end
  end
end

for i = 0, n - 1 do
  local at = 5 + i * 5
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
  key = target
end
redis.call('PEXPIRE', key, ttl)
return 'saved'
