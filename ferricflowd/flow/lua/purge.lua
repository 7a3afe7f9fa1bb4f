--[[ purge: delete terminal Flows now, with their history, values and children list.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
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
  local st = not r and 'ERR flow not found' or changed_since(r, ARGV[a + 1], ARGV[a + 2])
  if st then -- refused: no such Flow, or it changed since the caller looked
  elseif not TERMINAL[r[STATE]] then st = 'ERR flow wrong state'
  else
    redis.call('DEL', kflow(id), kpayload(id), khistory(id), kvalues(id), kchildren(id))
    zset(kterminal(r[TYPE], r[STATE]), id, false)
    count(r[TYPE], r[STATE], -1)
    _recs[id] = false  -- gone: a repeat of the id in this call finds nothing
    st = 'ok'
  end
  out[#out + 1] = st
end
flush()
return out
