--[[ extend: extend the leases of running Flows (the batch form of extend_lease).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV     now_ms override ('' = TIME), lease_ms, n, then n triples: id, lease_token, fencing
Reply    array of n: the new deadline (ms) or 'ERR flow not found' / 'ERR stale flow lease'.
         An expired lease can be extended as long as nobody reclaimed the Flow.
Events   lease_extended
]]

local now = now_ms(ARGV[1])
local lease_ms, n = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local id, token, fence = ARGV[4 + i * 3], ARGV[5 + i * 3], ARGV[6 + i * 3]
  local r = load(id)
  local st = check_lease(r, token, fence, '\0')
  if st == 'live' then
    local deadline = now + lease_ms
    redis.call('HSET', kf(id), 'deadline', deadline)
    redis.call('ZADD', T .. 'l:' .. r.type, deadline, id)
    event(r, 'lease_extended', {deadline = deadline})
    out[#out + 1] = deadline
  else
    out[#out + 1] = st
  end
end
return out
