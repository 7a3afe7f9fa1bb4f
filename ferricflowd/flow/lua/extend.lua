--[[ extend: extend the leases of running Flows (the batch form of extend_lease).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), lease_ms, n, then n triples: id, lease_token, fencing
Reply    array of n: the new deadline (ms) or 'ERR flow not found' / 'ERR stale flow lease'.
         An expired lease can be extended as long as nobody reclaimed the Flow.
Events   lease_extended
]]

local now = now_ms(ARGV[1])
local lease_ms = tonumber(ARGV[2])
return each_leased(4, 3, '\0', function(r)
  local deadline = now + lease_ms
  set(r, DEADLINE, deadline)
  zset(klease(r[TYPE]), r[ID], str(deadline))
  event(r, EV_EXTENDED, deadline)
  return deadline
end)
