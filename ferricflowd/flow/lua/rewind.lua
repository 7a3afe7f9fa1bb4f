--[[ rewind: move Flows that nobody holds back into a state, due now or later (requeue).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 9: id, to_state ('' = the state of
         history version to_version, or of its latest state-bearing event), to_version ('' =
         latest), run_at_ms ('' = now), reason, by (who asked), keep_attempts ('1' keeps
         attempt and crash count; '0' resets them), if_states (comma-separated; '' = any;
         'running' = an expired lease), if_version ('' = any)
Reply    array of n: the state each Flow is now due in, or an error string:
         'ERR flow not found', 'ERR flow stale version' (if_version differs),
         'ERR flow state mismatch' (not in if_states), 'ERR flow is leased' (running, lease
         not expired), 'ERR flow wrong state' (to a reserved state, or no state in its
         history to go back to), 'ERR flow family: children open' (a parent whose children
         group is unresolved), 'ERR flow family: has children' (a parent whose children
         already ran: its handler would spawn them again, and existing children are not run
         twice), 'ERR flow family: group resolved' (a finished child whose parent no longer
         waits for it, or whose parent lives in another partition)
Effect   fencing + 1 (a worker still holding an old lease gets 'stale flow lease'), the lease,
         due/parked/terminal index entry and count move, result and retention are cleared,
         payload, values and the last error stay. A finished child of a group that is still
         open goes back into it: the group counts it as pending again and resolves when it
         finishes.
Events   rewound {from, to, by, reason, fencing, attempts = 'reset' | 'kept'}
]]

local now = now_ms(ARGV[1])
local part = tostring(cfg('part', ''))

-- The events that put a Flow at rest in a state, and the detail naming it.
local STATE_OF = {created = 'state', transitioned = 'to', signaled = 'to', retry = 'to',
                  children_resolved = 'to', rewound = 'to'}

-- The state a Flow rested in as of history version `upto` (nil: the latest), read from its
-- history newest first, 32 entries at a time.
local function state_at(id, upto)
  local hk = khistory(id)
  local stop = redis.call('LLEN', hk) - 1
  while stop >= 0 do
    local start = math.max(0, stop - 31)
    local chunk = redis.call('LRANGE', hk, start, stop)
    for i = #chunk, 1, -1 do
      local e = cmsgpack.unpack(chunk[i])
      local field = STATE_OF[e[3]]
      if field and (not upto or e[1] <= upto) and type(e[4]) == 'table' then
        local st = e[4][field]
        if st and st ~= 'running' and not TERMINAL[st] then return st end
      end
    end
    stop = start - 1
  end
  return nil
end

-- Parents and children: nil when the Flow may be rewound, else the error. A finished child
-- also returns its parent's record and its children-hash entry, to reopen its slot.
local function family(r)
  local id = r[ID]
  if r[GRP_OPEN] and (r[GRP_RES] or '') == '' then return 'ERR flow family: children open' end
  if r[GRP_NAME] and redis.call('HLEN', kchildren(id)) > 0 then
    return 'ERR flow family: has children'
  end
  if not r[PARENT] or not TERMINAL[r[STATE]] then return nil end
  if r[PP] ~= part then return 'ERR flow family: group resolved (parent in another partition)' end
  local p = load(r[PARENT])
  local entry = redis.call('HGET', kchildren(r[PARENT]), id)
  if not p or not entry or TERMINAL[p[STATE]] or not p[GRP_OPEN] or (p[GRP_RES] or '') ~= '' then
    return 'ERR flow family: group resolved'
  end
  local _, _, group = parse_kid(entry)
  if group ~= p[GRP_NAME] then return 'ERR flow family: group resolved' end
  return nil, p, entry
end

-- Count a finished child as pending again in its parent's open group.
local function reopen(p, id, entry)
  local status, kpart, group = parse_kid(entry)
  if status == 'pending' then return end
  redis.call('HSET', kchildren(p[ID]), id, 'pending|' .. kpart .. '|' .. group)
  set(p, GRP_DONE, math.max(0, (p[GRP_DONE] or 0) - 1))
  if status == 'completed' then set(p, GRP_OK, math.max(0, (p[GRP_OK] or 0) - 1)) end
end

-- The rewound event: a details map (six fields, more than event() takes), packed whole.
local function rewound(r, details)
  local ver = (r[VER] or 0) + 1
  touch(r)
  r[VER], r[UPDATED] = ver, now
  _nh = _nh + 2
  _hist[_nh - 1], _hist[_nh] = r[ID], cmsgpack.pack({ver, now, 'rewound', details})
end

local function check(r, a)
  if not r then return 'ERR flow not found' end
  local changed = changed_since(r, ARGV[a + 7], ARGV[a + 8])
  if changed then return changed end
  if r[STATE] == 'running' and (r[DEADLINE] or 0) > now then return 'ERR flow is leased' end
  return family(r)
end

local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 9
  local id = ARGV[a]
  local r = load(id)
  local err, p, entry = check(r, a)
  local to = ARGV[a + 1]
  if not err and to == '' then
    to = state_at(id, tonumber(ARGV[a + 2]))
    if not to then err = 'ERR flow wrong state (no state in its history to go back to; name one)' end
  end
  if not err and (to == 'running' or TERMINAL[to]) then err = 'ERR flow wrong state' end
  if err then
    out[#out + 1] = err
  else
    if p then reopen(p, id, entry) end
    local from = r[STATE]
    if TERMINAL[from] then zset(kterminal(r[TYPE], from), id, false) end
    local from_state = from == 'running' and r[RUN_STATE] or from
    unrest(r)
    local fence = (r[FENCE] or 0) + 1
    set(r, FENCE, fence, LO, 'rewind', UNTIL, false, RESULT, false)
    local keep = ARGV[a + 6] == '1'
    if not keep then set(r, ATTEMPT, 1, CRASHES, false) end
    if r[GRP_NAME] then  -- an empty group (no children): the Flow starts over without it
      for k = GRP_OPEN, GRP_DIGEST do put(r, k, false) end
    end
    rest(r, to, tonumber(ARGV[a + 3]) or now)
    rewound(r, {from = from_state, status = from, to = to, by = ARGV[a + 5],
                reason = ARGV[a + 4], fencing = fence, attempts = keep and 'kept' or 'reset'})
    out[#out + 1] = to
  end
end
flush()
return out
