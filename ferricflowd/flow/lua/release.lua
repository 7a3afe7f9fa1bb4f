--[[ release: hand claimed Flows back unstarted (a draining worker), due again at once.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV     now_ms override ('' = TIME), cause, n, then n triples: id, lease_token, fencing
Reply    array of n: 'ok', 'ERR flow not found' or 'ERR stale flow lease'
Effect   no crash is counted and the attempt is unchanged: the handler never ran.
Events   lease_released {cause}
]]

local now = now_ms(ARGV[1])
local cause, n = ARGV[2], tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local r = load(ARGV[4 + i * 3])
  local st = check_lease(r, ARGV[5 + i * 3], ARGV[6 + i * 3], '\0')
  if st == 'live' then
    release(r, cause)
    st = 'ok'
  end
  out[#out + 1] = st
end
flush_wakes()
return out
