--[[ complete: finish running Flows successfully (the batch form; one Flow is n = 1).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 5: id, lease_token, fencing,
         result ('' = none), values (msgpack map or '')
Reply    array of n: 'ok', 'replay' (the same complete again: nothing written), or
         'ERR flow not found' / 'ERR stale flow lease' / 'ERR flow value ...'
Events   completed; the parent's group is settled in the same call when it shares the
         partition, otherwise through the outbox.
]]

now_ms(ARGV[1])
return each_leased(3, 5, 'complete', function(r, a)
  local err = put_values(r[ID], ARGV[a + 4], false)
  if err then return err end
  finish(r, 'completed', 'complete', RESULT, ARGV[a + 3] ~= '' and ARGV[a + 3], EV_COMPLETED,
         r[FENCE])
  return 'ok'
end)
