--[[ release: hand claimed Flows back unstarted (a draining worker), due again at once.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), cause, n, then n triples: id, lease_token, fencing
Reply    array of n: 'ok', 'ERR flow not found' or 'ERR stale flow lease'
Effect   no crash is counted and the attempt is unchanged: the handler never ran.
Events   lease_released {cause}
]]

now_ms(ARGV[1])
return each_leased(4, 3, '\0', function(r)
  release(r, ARGV[2])
  return 'ok'
end)
