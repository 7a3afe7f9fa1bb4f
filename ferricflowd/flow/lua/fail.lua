--[[ fail: fail running Flows at once; the retry policy is not consulted.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 4: id, lease_token, fencing, error
Reply    array of n: 'ok', 'replay', 'ERR flow not found' or 'ERR stale flow lease'
Events   failed; unfinished children are cancelled (other partitions via the outbox) and the
         parent's group is settled.
]]

now_ms(ARGV[1])
return each_leased(3, 4, 'fail', function(r, a)
  finish(r, 'failed', 'fail', ERROR, ARGV[a + 3], EV_FAILED, ARGV[a + 3], r[FENCE])
  cascade_cancel(r, 'parent failed')
  return 'ok'
end)
