--[[ purge: delete terminal Flows now, with their history, values and children list.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 3: id, if_status ('' = any terminal
         status), if_version ('' = any)
Reply    array of n: 'ok', or 'ERR flow not found', 'ERR flow stale version',
         'ERR flow state mismatch' (not if_status), 'ERR flow wrong state' (not terminal)
Effect   what cleanup.lua does at the retention, for the named Flows and at once. Children
         are Flows of their own and stay; a parent that later hears from one ignores it.
]]

now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 3
  local id = ARGV[a]
  local r = load(id)
  local st
  if not r then st = 'ERR flow not found'
  elseif ARGV[a + 2] ~= '' and r[VER] ~= tonumber(ARGV[a + 2]) then st = 'ERR flow stale version'
  elseif ARGV[a + 1] ~= '' and r[STATE] ~= ARGV[a + 1] then st = 'ERR flow state mismatch'
  elseif not TERMINAL[r[STATE]] then st = 'ERR flow wrong state'
  else
    redis.call('DEL', kf(id), T .. 'b:' .. id, T .. 'h:' .. id, T .. 'v:' .. id, T .. 'k:' .. id)
    zset(tkey('t:', r[TYPE], r[STATE]), id, false)
    count(r[TYPE], r[STATE], -1)
    _recs[id] = false  -- gone: a repeat of the id in this call finds nothing
    st = 'ok'
  end
  out[#out + 1] = st
end
flush()
return out
