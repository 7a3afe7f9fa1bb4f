--[[ fail: fail running Flows at once; the retry policy is not consulted.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 4: id, lease_token, fencing, error
Reply    array of n: 'ok', 'replay', 'ERR flow not found' or 'ERR stale flow lease'
Events   failed; unfinished children are cancelled (other partitions via the outbox) and the
         parent's group is settled.
]]

local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 4
  local r = load(ARGV[a])
  local st = check_lease(r, ARGV[a + 1], ARGV[a + 2], 'fail')
  if st == 'live' then
    finish(r, 'failed', 'fail', {error = ARGV[a + 3], fencing = tonumber(r.fence)}, {'error', ARGV[a + 3]})
    cascade_cancel(r, 'parent failed')
    st = 'ok'
  end
  out[#out + 1] = st
end
flush_wakes()
return out
