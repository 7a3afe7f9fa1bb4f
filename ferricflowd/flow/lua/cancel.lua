--[[ cancel: cancel Flows; a running Flow needs its lease (token and fencing).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 4: id, reason, lease_token ('' =
         none), fencing ('' = none)
Reply    array of n: 'ok', 'replay' (already cancelled), 'ERR flow not found',
         'ERR flow is terminal' (completed or failed), 'ERR stale flow lease'
Events   cancelled; unfinished children are cancelled too (other partitions via the outbox)
]]

local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 4
  local r = load(ARGV[a])
  local st
  if not r then st = 'ERR flow not found'
  elseif r[STATE] == 'cancelled' then st = 'replay'
  elseif TERMINAL[r[STATE]] then st = 'ERR flow is terminal'
  elseif r[STATE] == 'running' and (r[TOKEN] ~= ARGV[a + 2] or dec(r[FENCE]) ~= ARGV[a + 3]) then
    st = 'ERR stale flow lease'
  else
    cancel_flow(r, ARGV[a + 1])
    st = 'ok'
  end
  out[#out + 1] = st
end
flush()
return out
