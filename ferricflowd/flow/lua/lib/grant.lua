--[[ lib/grant.lua: retry policies, lease requests and granting a lease.

Uses call.lua, keys.lua, record.lua and history.lua (event); claim.lua and transition.lua
grant leases, retry.lua and reclaim.lua read policies.
]]

-- grant()'s "none" for the names and values it leaves out or sends (never written to).
local EMPTY = {}

-- A state's retry policy: kpolicy(type) field <state>, else field '*', else this.
local DEFAULT_POLICY = {max_retries = 3, backoff = 'exponential', base_ms = 1000,
                        max_ms = 30000, jitter_pct = 20, exhausted_to = 'failed', max_crashes = 3}

local function policy(ftype, state)
  local cache_key = ftype .. '\0' .. state
  local pol = _policies[cache_key]
  if pol then return pol end
  local pk = kpolicy(ftype)
  local raw = redis.call('HGET', pk, state) or redis.call('HGET', pk, '*')
  pol = raw and cjson.decode(raw) or DEFAULT_POLICY
  _policies[cache_key] = pol
  return pol
end

-- A lease request, read from ARGV at index i: worker id ('' = none), lease_ms, payload_cap
-- (bytes, 0 = no cap), value_max_bytes (0 = no cap), n_states, states..., n_values, names....
-- Returns the spec and the index after it.
local function lease_spec(i)
  local spec = {worker = ARGV[i], ms = tonumber(ARGV[i + 1]), payload_cap = tonumber(ARGV[i + 2]),
                value_cap = tonumber(ARGV[i + 3]), states = {}, handles = {}, names = {}}
  local ns = tonumber(ARGV[i + 4])
  for j = 1, ns do
    spec.states[j] = ARGV[i + 4 + j]
    spec.handles[ARGV[i + 4 + j]] = true
  end
  local nv = tonumber(ARGV[i + 5 + ns])
  for j = 1, nv do spec.names[j] = ARGV[i + 5 + ns + j] end
  -- What every grant of this call shares (the clock is fixed for the call).
  spec.deadline = now_ms() + spec.ms
  spec.deadline_s = str(spec.deadline)
  spec.token_head = spec.worker .. ':' .. now_str() .. ':'
  spec.wkey = kworker(spec.worker)
  return spec, i + 6 + ns + nv
end

-- Lease a Flow that is out of every set (its count already moved) to spec.worker in `st`.
-- Returns the claim reply item's 8 fields: id, state, payload, attempt, fencing, lease_token,
-- deadline_ms, extra, extra = 0 or {priority, parent_id, attempts_total, big, values,
-- crash_count, suspect}. As values, not a table: claim puts them in its flat reply (a table
-- in a reply costs Redis ~2,500 Ir to convert besides its own making).
local function grant(r, st, spec)
  local id, worker = r[ID], spec.worker
  count(r[TYPE], 'running', 1)
  local fence = (r[FENCE] or 0) + 1
  local token = spec.token_head .. (DEC[fence] or dec(fence))
  touch(r)
  r[STATE], r[RUN_STATE], r[FENCE], r[OWNER], r[TOKEN] = 'running', st, fence, worker, token
  r[DEADLINE], r[LO], r[DUE] = spec.deadline, false, false
  zset(klease(r[TYPE]), id, spec.deadline_s)
  sset(spec.wkey, id, true)
  event(r, EV_CLAIMED, worker, fence, r[ATTEMPT])
  -- big: names of what exceeded a cap ('' = the payload); EMPTY (never written) when none.
  local big, vals, payload = EMPTY, EMPTY, get_payload(r)
  if spec.payload_cap > 0 and #payload > spec.payload_cap then
    big, payload = {''}, ''
  end
  if #spec.names > 0 then
    if big == EMPTY then big = {} end
    vals = {}
    local got = redis.call('HMGET', kvalues(id), unpack(spec.names))
    for j, name in ipairs(spec.names) do
      local data = got[j]
      if data then
        if spec.value_cap > 0 and #data > spec.value_cap then big[#big + 1] = name
        else vals[#vals + 1] = name; vals[#vals + 1] = data end
      end
    end
  end
  local crashes, suspect = r[CRASHES] or 0, 0
  if crashes > 0 then
    local max = tonumber(policy(r[TYPE], st).max_crashes or 3)
    if max > 1 and crashes >= math.max(1, max - 1) then suspect = 1 end
  end
  -- The rarely set fields only when one of them is (a reply field costs the store ~1,000 Ir).
  local extra = 0
  if (r[PRIO] and r[PRIO] ~= '0') or r[PARENT] or r[ATTEMPTS] or crashes > 0 or #big > 0 or #vals > 0 then
    extra = {r[PRIO] or '0', r[PARENT] or '', r[ATTEMPTS] or 0, big, vals, crashes, suspect}
  end
  return id, st, payload, r[ATTEMPT], fence, token, spec.deadline, extra
end
