--[[ signal: record a durable signal on a Flow, optionally moving it (guarded by if_state).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), id, name, values (msgpack map or ''), transition_to
         ('' = passive), run_at_ms ('' = now), idempotency_key (''), request digest,
         n_if_states, if_states...
Reply    'ok' or 'dup' (same idempotency key and request: nothing written); error replies
         'ERR flow not found', 'ERR flow is terminal', 'ERR flow state mismatch',
         'ERR flow signal idempotency conflict', 'ERR flow value ...'
Effect   passive: only the event (and values). With transition_to: lease cleared (its
         holder then gets a stale-lease error), state = transition_to, due at run_at or now.
Events   signaled
]]

local now = now_ms(ARGV[1])
local id, name, to, key, digest = ARGV[2], ARGV[3], ARGV[5], ARGV[7], ARGV[8]
local r = load(id)
if not r then return redis.error_reply('ERR flow not found') end
if key ~= '' then
  local seen = r[SI] and r[SI][key]
  if seen == digest then return 'dup' end
  if seen then return redis.error_reply('ERR flow signal idempotency conflict') end
end
if TERMINAL[r[STATE]] then return redis.error_reply('ERR flow is terminal') end
local nstates = tonumber(ARGV[9])
if nstates > 0 then
  local current, match = logical_state(r), false
  for i = 1, nstates do if ARGV[9 + i] == current then match = true end end
  if not match then return redis.error_reply('ERR flow state mismatch') end
end
local err = put_values(id, ARGV[4], true)
if err then return redis.error_reply(err) end
if key ~= '' then
  local si = r[SI] or {}
  si[key] = digest
  set(r, SI, si)
end
if to == '' then
  event(r, EV_SIGNALED, name)
else
  local from = logical_state(r)
  unrest(r)
  local due = now
  if ARGV[6] ~= '' then due = tonumber(ARGV[6]) end
  set(r, LO, 'signal', GRP_PARKED, false)
  if to ~= from then set(r, ATTEMPT, 1) end
  rest(r, to, due)
  event(r, EV_SIGNALED_TO, name, from, to)
end
flush()
return 'ok'
