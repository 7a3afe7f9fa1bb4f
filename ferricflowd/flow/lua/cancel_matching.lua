--[[ cancel_matching: cancel Flows that are still as the caller saw them (bulk cancel).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 4: id, reason, if_states
         (comma-separated, '' = any; 'running' = an expired lease), if_version ('' = any)
Reply    array of n: 'ok', or 'ERR flow not found', 'ERR flow stale version',
         'ERR flow state mismatch', 'ERR flow is terminal', 'ERR flow is leased' (running,
         lease not expired: only its holder may end it)
Effect   as cancel.lua without a lease: a Flow whose lease expired is cancelled with fencing
         + 1, so its last holder gets 'stale flow lease'. Unfinished children are cancelled
         too (other partitions via the outbox); a child's parent group hears of it.
Events   cancelled
]]

local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 4
  local r = load(ARGV[a])
  local st = not r and 'ERR flow not found' or changed_since(r, ARGV[a + 2], ARGV[a + 3])
  if st then -- refused: no such Flow, or it changed since the caller looked
  elseif TERMINAL[r[STATE]] then st = 'ERR flow is terminal'
  elseif r[STATE] == 'running' and (r[DEADLINE] or 0) > now then st = 'ERR flow is leased'
  else
    if r[STATE] == 'running' then set(r, FENCE, (r[FENCE] or 0) + 1) end
    cancel_flow(r, ARGV[a + 1])
    st = 'ok'
  end
  out[#out + 1] = st
end
flush()
return out
