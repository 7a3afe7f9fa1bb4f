--[[ transition: move running Flows to their next state (the batch form).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), a lease request as in claim.lua (worker '' = none),
         n, then n items of 8: id, lease_token, fencing,
         to_state, payload ('' = keep, '=' .. bytes = set), values (msgpack map or ''), run_at_ms ('' = now),
         priority ('' = keep)
Reply    array of n: 'ok', a claim item (claim.lua's 8 fields, as one array) when the Flow
         went on to a state the lease request handles, 'replay' (same transition again),
         'ERR flow not found', 'ERR stale flow lease', 'ERR flow wrong state' (to a terminal state or 'running'),
         'ERR flow value ...'
Keep     A Flow that is due at once in a state of the lease request, with no children group
         and no crash on record, is leased straight on to the requesting worker (as a sticky
         queue does) instead of resting in its due set: one call, not a transition and a claim.
Events   transitioned (then claimed when kept). A parent with a pending children group rests parked in to_state; if
         the group already resolved it wakes at once into the group's wait_state
         (children_resolved) or fails.
]]

local now = now_ms(ARGV[1])
local spec, first = lease_spec(2)
return each_leased(first + 1, 8, function(a) return 'transition:' .. ARGV[a + 3] end, function(r, a)
  local id, to = r[ID], ARGV[a + 3]
  if to == 'running' or TERMINAL[to] then return 'ERR flow wrong state' end
  local err = put_values(id, ARGV[a + 5], false)
  if err then return err end
  local from = r[RUN_STATE]
  unrest(r)
  set(r, LO, 'transition:' .. to)
  if to ~= from then set(r, ATTEMPT, 1) end
  if ARGV[a + 4] ~= '' then set_payload(r, string.sub(ARGV[a + 4], 2)) end
  if ARGV[a + 7] ~= '' then set(r, PRIO, ARGV[a + 7]) end
  if r[GRP_OPEN] and (r[GRP_RES] or '') == '' then
    -- Park: the last child to finish wakes the parent into the group's wait_state.
    set(r, GRP_PARKED, 1)
    rest(r, to, nil)
    event(r, EV_PARKED, from, to, 1)
  else
    local due = now
    if ARGV[a + 6] ~= '' then due = tonumber(ARGV[a + 6]) end
    if spec.handles[to] and due <= now and not r[GRP_OPEN] and (r[CRASHES] or 0) == 0 then
      event(r, EV_TRANSITIONED, from, to, due)
      local item = {grant(r, to, spec)}
      set(r, LO, 'transition:' .. to)  -- a lost reply resent is still a replay
      return item
    end
    rest(r, to, due)
    event(r, EV_TRANSITIONED, from, to, due)
    -- The children finished while the handler was still running: settle now.
    if r[GRP_OPEN] then settle_group(r) end
  end
  return 'ok'
end)
