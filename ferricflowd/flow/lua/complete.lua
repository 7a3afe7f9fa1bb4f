--[[ complete: finish running Flows successfully (the batch form; one Flow is n = 1).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 5: id, lease_token, fencing,
         result ('' = none), values (msgpack map or '')
Reply    array of n: 'ok', 'replay' (the same complete again: nothing written), or
         'ERR flow not found' / 'ERR stale flow lease' / 'ERR flow value ...'
Events   completed; the parent's group is settled in the same call when it shares the
         partition, otherwise through the outbox.
]]

local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 5
  local id = ARGV[a]
  local r = load(id)
  local st = check_lease(r, ARGV[a + 1], ARGV[a + 2], 'complete')
  if st == 'live' then
    local err = put_values(id, ARGV[a + 4], false)
    if err then
      st = err
    else
      finish(r, 'completed', 'complete', {fencing = tonumber(r.fence)}, {'result', ARGV[a + 3]})
      st = 'ok'
    end
  end
  out[#out + 1] = st
end
flush_wakes()
return out
