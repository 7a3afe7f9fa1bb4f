--[[ _lib.lua: helpers prepended to every command script (not a command itself).

Key families (KEYS[1] is the partition prefix "{<ns>:<p>}:"; every other key a script
touches is that prefix plus a suffix, so all of them share one hash tag and one cluster slot;
ferricflowd/flow/keys.py builds the same names on the Python side):

  f:<id>                    hash    the Flow record
  h:<id>                    list    history, one msgpack [version, at_ms, event, details] each
  v:<id>                    hash    named values
  k:<id>                    hash    children of a parent: child id -> "<status>|<partition>|<group>"
  d:<type>:<state>:<prio>   zset    due Flows, score = due time (ms)
  l:<type>                  zset    running Flows, score = lease deadline (ms)
  w:<worker>                set     ids leased by one worker id
  t:<type>:<status>         zset    terminal Flows, score = terminal time (ms)
  x:<type>:<state>          list    wake tokens for idle workers (capped)
  c:<type>                  hash    Flow count per state ("running" included)
  s:<type>                  set     states seen for a type
  p:<type>                  hash    retry policy per state ("*" = the type's default)
  o                         list    outbox: child -> parent notices for other partitions
  types                     set     types seen in this partition
  cfg                       hash    partition settings: history_cap, retention_ms, part
]]

local T = KEYS[1]
local TERMINAL = {completed = true, failed = true, cancelled = true}
local WAKE_CAP = 8

local _now = nil
local function now_ms(override)
  if _now then return _now end
  if override and override ~= '' then
    _now = tonumber(override)
  else
    local t = redis.call('TIME')
    _now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return _now
end

local _cfg = nil
local function cfg(name, default)
  if not _cfg then
    _cfg = {}
    local flat = redis.call('HGETALL', T .. 'cfg')
    for i = 1, #flat, 2 do _cfg[flat[i]] = flat[i + 1] end
  end
  local v = _cfg[name]
  if v == nil or v == '' then return default end
  return tonumber(v) or v
end

local function kf(id) return T .. 'f:' .. id end
local function kdue(ftype, state, prio) return T .. 'd:' .. ftype .. ':' .. state .. ':' .. prio end

-- Read a record into a table of its non-empty fields; nil when absent.
local function load(id)
  local flat = redis.call('HGETALL', kf(id))
  if #flat == 0 then return nil end
  local r = {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  r.id = id
  return r
end

local function logical_state(r)
  if r.state == 'running' then return r.run_state end
  return r.state
end

-- Append one history event; every accepted mutation bumps the version by one.
local function event(r, name, details)
  local ver = tonumber(r.ver or '0') + 1
  r.ver = tostring(ver)
  redis.call('HSET', kf(r.id), 'ver', ver, 'updated', now_ms())
  local hk = T .. 'h:' .. r.id
  local len = redis.call('RPUSH', hk, cmsgpack.pack({ver, now_ms(), name, details or {}}))
  local cap = cfg('history_cap', 10000)
  if len > cap then redis.call('LTRIM', hk, -cap, -1) end
  return ver
end

local function count(ftype, state, delta)
  redis.call('HINCRBY', T .. 'c:' .. ftype, state, delta)
end

local _woken = {}
local function wake(ftype, state)
  _woken[T .. 'x:' .. ftype .. ':' .. state] = true
end

-- Push one wake token per (type, state) made due during this call; LTRIM keeps lists short
-- because a token only means "look again", and a claim that leaves work behind re-wakes.
local function flush_wakes()
  for key, _ in pairs(_woken) do
    redis.call('LPUSH', key, '1')
    redis.call('LTRIM', key, 0, WAKE_CAP - 1)
  end
  _woken = {}
end

-- Put a Flow at rest in `state`: due at `due` (ms) or parked when due is nil.
local function rest(r, state, due)
  local prio = r.prio or '0'
  r.state = state
  if due then
    redis.call('HSET', kf(r.id), 'state', state, 'due', due)
    redis.call('ZADD', kdue(r.type, state, prio), due, r.id)
    -- Future due times wake idle workers too: they re-claim and shorten their block to it.
    wake(r.type, state)
  else
    redis.call('HSET', kf(r.id), 'state', state)
    redis.call('HDEL', kf(r.id), 'due')
  end
  redis.call('SADD', T .. 's:' .. r.type, state)
  count(r.type, state, 1)
end

-- Take a Flow out of wherever it is now (due set, lease, parked) and out of its count.
local function unrest(r)
  if r.state == 'running' then
    redis.call('ZREM', T .. 'l:' .. r.type, r.id)
    if r.owner then redis.call('SREM', T .. 'w:' .. r.owner, r.id) end
    redis.call('HDEL', kf(r.id), 'owner', 'token', 'deadline', 'run_state')
  elseif not TERMINAL[r.state] then
    redis.call('ZREM', kdue(r.type, r.state, r.prio or '0'), r.id)
  end
  count(r.type, r.state, -1)
end

-- Check the caller holds the live lease; `replay` names the outcome for replay detection.
-- Returns 'live', 'replay', or an error string for the item.
local function check_lease(r, token, fence, replay)
  if not r then return 'ERR flow not found' end
  if r.state == 'running' and r.token == token and r.fence == fence then return 'live' end
  if r.state ~= 'running' and r.fence == fence and r.lo == replay then return 'replay' end
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
  flush_wakes()
  return out
end

local function put_values(id, packed, override)
  if not packed or packed == '' then return nil end
  local vals = cmsgpack.unpack(packed)
  local vk = T .. 'v:' .. id
  for name, data in pairs(vals) do
    local old = redis.call('HGET', vk, name)
    if old and old ~= data and not override then
      return 'ERR flow value ' .. name .. ' already exists with different digest; use OVERRIDE true'
    end
  end
  for name, data in pairs(vals) do redis.call('HSET', vk, name, data) end
  return nil
end

local finish, cascade_cancel

-- A children-hash entry is "<status>|<partition>|<group>".
local function parse_kid(entry)
  local a = string.find(entry, '|', 1, true)
  local b = string.find(entry, '|', a + 1, true)
  return string.sub(entry, 1, a - 1), string.sub(entry, a + 1, b - 1), string.sub(entry, b + 1)
end

-- Apply a resolved children group to its parked parent: wake it into wait_state, or fail it.
local function settle_group(p)
  redis.call('HDEL', kf(p.id), 'grp_open', 'grp_parked')
  if p.grp_res == 'ok' then
    unrest(p)
    redis.call('HSET', kf(p.id), 'attempt', 1)
    rest(p, p.grp_state, now_ms())
    event(p, 'children_resolved', {result = 'ok', to = p.grp_state})
  else
    local err = p.grp_err or 'a child failed'
    finish(p, 'failed', 'fail', {error = err, cause = 'child'}, {'error', err})
    cascade_cancel(p, 'parent failed')
  end
end

-- A child reached a terminal status: settle its parent's group (same partition only).
local function child_done(parent_id, child_id, status)
  local kk = T .. 'k:' .. parent_id
  local cur = redis.call('HGET', kk, child_id)
  if not cur then return end
  local kstatus, kpart, kgroup = parse_kid(cur)
  if kstatus ~= 'pending' then return end
  redis.call('HSET', kk, child_id, status .. '|' .. kpart .. '|' .. kgroup)
  local p = load(parent_id)
  if not p or TERMINAL[p.state] or not p.grp_open or (p.grp_res or '') ~= '' then return end
  if p.grp_name ~= kgroup then return end
  local done = redis.call('HINCRBY', kf(parent_id), 'grp_done', 1)
  local ok = tonumber(p.grp_ok or '0')
  if status == 'completed' then ok = redis.call('HINCRBY', kf(parent_id), 'grp_ok', 1) end
  local n = tonumber(p.grp_n)
  local res = ''
  if p.grp_wait == 'any' then
    if ok > 0 then res = 'ok'
    elseif done >= n then res = (p.grp_fail == 'ignore') and 'ok' or 'failed' end
  else
    if status ~= 'completed' and p.grp_fail ~= 'ignore' then res = 'failed'
    elseif done >= n then res = 'ok' end
  end
  if res == '' then return end
  p.grp_res = res
  redis.call('HSET', kf(parent_id), 'grp_res', res)
  if res == 'failed' then
    p.grp_err = 'child ' .. child_id .. ' ' .. status
    redis.call('HSET', kf(parent_id), 'grp_err', p.grp_err)
  end
  -- A parent still running its handler learns the result when its outcome arrives.
  if p.grp_parked then settle_group(p) end
end

-- After a Flow became terminal: tell its parent (inline or via the outbox).
local function parent_hook(r, status)
  if not r.parent then return end
  if (r.pp or '') == tostring(cfg('part', '')) then
    child_done(r.parent, r.id, status)
  else
    -- Outbox entry: {target partition, target id, source id, kind}; see deliver.lua.
    redis.call('RPUSH', T .. 'o', cmsgpack.pack({r.pp, r.parent, r.id, status}))
  end
end

-- Make a Flow terminal; `extra` is a flat list of record fields to set alongside; the event
-- is named after the status unless `ev` names it.
finish = function(r, status, kind, details, extra, ev)
  unrest(r)
  local now = now_ms()
  local fields = {'lo', kind, 'until', now + cfg('retention_ms', 604800000)}
  for _, v in ipairs(extra or {}) do fields[#fields + 1] = v end
  redis.call('HSET', kf(r.id), unpack(fields))
  rest(r, status, nil)
  redis.call('ZADD', T .. 't:' .. r.type .. ':' .. status, now, r.id)
  redis.call('SADD', T .. 'types', r.type)
  local ver = event(r, ev or status, details)
  parent_hook(r, status)
  return ver
end

-- Cancel the unfinished children of `p`: inline in this partition (recursively), through the
-- outbox in others.
cascade_cancel = function(p, reason)
  local flat = redis.call('HGETALL', T .. 'k:' .. p.id)
  for i = 1, #flat, 2 do
    local cid = flat[i]
    local kstatus, kpart = parse_kid(flat[i + 1])
    if kstatus == 'pending' then
      if kpart == tostring(cfg('part', '')) then
        local c = load(cid)
        if c and not TERMINAL[c.state] then
          finish(c, 'cancelled', 'cancel', {reason = reason}, {'error', reason})
          cascade_cancel(c, reason)
        end
      else
        redis.call('RPUSH', T .. 'o', cmsgpack.pack({kpart, cid, p.id, 'cancel'}))
      end
    end
  end
end

-- Release a running Flow's lease: due again at once in its logical state.
local function release(r, cause)
  local state = r.run_state
  unrest(r)
  redis.call('HSET', kf(r.id), 'lo', 'released')
  rest(r, state, now_ms())
  return event(r, 'lease_released', {cause = cause})
end

local DEFAULT_POLICY = {max_retries = 3, backoff = 'exponential', base_ms = 1000,
                        max_ms = 30000, jitter_pct = 20, exhausted_to = 'failed', max_crashes = 3}

local function policy(ftype, state)
  local pk = T .. 'p:' .. ftype
  local raw = redis.call('HGET', pk, state) or redis.call('HGET', pk, '*')
  if not raw then return DEFAULT_POLICY end
  return cjson.decode(raw)
end
