--[[ lib/lease.lua: where a Flow rests (due, parked, leased), lease checks and release.

Uses call.lua, keys.lua, record.lua (the unit of work) and history.lua (event).
]]

-- Put a Flow at rest in `state`: due at `due` (ms; `due_s` the same as a string when the
-- caller has it) or parked when due is nil.
local function rest(r, state, due, due_s)
  if due then
    touch(r)
    r[STATE], r[DUE] = state, due
    zset(kdue(r[TYPE], state, r[PRIO] or '0'), r[ID], due_s or (due == _now and _now_s) or str(due))
    -- Future due times wake idle workers too: they re-claim and shorten their block to it.
    wake(r[TYPE], state)
  else
    touch(r)
    r[STATE], r[DUE] = state, false
    -- Parked (a parent waiting for its children): indexed by when, so operators can list it.
    if not TERMINAL[state] then zset(kparked(r[TYPE], state), r[ID], now_str()) end
  end
  count(r[TYPE], state, 1)
end

-- Take a Flow out of wherever it is now (due set, lease, parked) and out of its count.
local function unrest(r)
  if r[STATE] == 'running' then
    zset(klease(r[TYPE]), r[ID], false)
    if r[OWNER] then sset(kworker(r[OWNER]), r[ID], false) end
    touch(r)
    r[OWNER], r[TOKEN], r[DEADLINE], r[RUN_STATE] = false, false, false, false
  elseif r[DUE] then
    zset(kdue(r[TYPE], r[STATE], r[PRIO] or '0'), r[ID], false)
  elseif not TERMINAL[r[STATE]] then
    zset(kparked(r[TYPE], r[STATE]), r[ID], false)
  end
  count(r[TYPE], r[STATE], -1)
end

-- Check the caller holds the live lease; `replay` names the outcome for replay detection.
-- Returns 'live', 'replay', or an error string for the item.
local function check_lease(r, token, fence, replay)
  if not r then return 'ERR flow not found' end
  local f = r[FENCE]
  f = f and (DEC[f] or dec(f))
  if r[STATE] == 'running' and r[TOKEN] == token and f == fence then return 'live' end
  if r[STATE] ~= 'running' and f == fence and r[LO] == replay then return 'replay' end
  -- The reply to a transition was lost after the same call leased the next state on.
  if r[STATE] == 'running' and r[LO] == replay and r[FENCE] == (tonumber(fence) or -2) + 1 then
    return 'replay'
  end
  return 'ERR stale flow lease'
end

-- The loop of every lease-checked batch command: ARGV[first - 1] is the item count, each
-- item has `width` fields starting with id, lease_token, fencing. `replay` names the outcome
-- for replay detection (a function of the item's first ARGV index, or a string). `fn(r, a)`
-- runs for a live lease and returns the item's reply; the others reply with check_lease's.
local function each_leased(first, width, replay, fn)
  local out = {}
  for i = 0, tonumber(ARGV[first - 1]) - 1 do
    local a = first + i * width
    local r = load(ARGV[a])
    local tag = replay
    if type(replay) == 'function' then tag = replay(a) end
    local st = check_lease(r, ARGV[a + 1], ARGV[a + 2], tag)
    if st == 'live' then st = fn(r, a) end
    out[#out + 1] = st
  end
  flush()
  return out
end

-- Release a running Flow's lease: due again at once in its logical state.
local function release(r, cause)
  local state = r[RUN_STATE]
  unrest(r)
  set(r, LO, 'released')
  rest(r, state, now_ms())
  return event(r, EV_RELEASED, cause)
end
