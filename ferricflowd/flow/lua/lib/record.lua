--[[ lib/record.lua: the record layout, the partition settings and the unit of work.

Uses the per-call state, str and the clock (call.lua) and the key builders (keys.lua).

Writes go through a per-call unit of work: a script loads each record once (load: one GET
and a cmsgpack.unpack in C), changes it in memory (set, event, zset, sset, count), and
flush() writes every changed record with one MSET, each Flow's new history with one RPUSH,
and each set, sorted set and counter hash with one command. Reads of sorted sets must come
after a flush(). A record is one string rather than a hash because a hash costs a command
argument per field on every write (HSET, HDEL) and a Lua string per field on every read:
a claim or complete cost 27 % more store instructions that way (bench.engine_ir).

A record is a msgpack array with a field at each position (the constants below; records.py's
FIELDS names them for Python), not a map: no field-name strings to make on every load and
write on every flush, and the array is unpacked straight onto the Lua stack into a table
sized once (see load()). An absent field is false, never nil (the array must have no hole
for cmsgpack to pack it as one); the first CORE fields are always there, so the array always
has an array16 header (3 bytes), and a later one only once set. Counters and times are msgpack
integers, so no tonumber or string.format is needed on the hot paths. Slot ID holds the id in
memory and is stored as false; slot SI holds a map (signal idempotency key -> digest).
]]

-- Record positions (records.py:FIELDS lists the same names in the same order). Past CORE,
-- the fields most Flows get come first: every terminal Flow sets until and result or error,
-- and each position before the last set one costs a false to pack and unpack (~600 Ir).
local ID, TYPE, STATE, RUN_STATE, ATTEMPT, VER, CREATED, UPDATED = 1, 2, 3, 4, 5, 6, 7, 8
local DIGEST, PAYLOAD, DUE, FENCE, OWNER, TOKEN, DEADLINE, LO = 9, 10, 11, 12, 13, 14, 15, 16
local UNTIL, RESULT, ERROR, PRIO, ATTEMPTS, CRASHES, PARENT, PP = 17, 18, 19, 20, 21, 22, 23, 24
local PB, ROOT, CORR, PKEY, GRP_OPEN, GRP_PARKED, GRP_RES = 25, 26, 27, 28, 29, 30, 31
local GRP_ERR, GRP_DONE, GRP_OK, GRP_N, GRP_WAIT, GRP_FAIL, GRP_NAME = 32, 33, 34, 35, 36, 37, 38
local GRP_STATE, GRP_DIGEST, SI = 39, 40, 41
local CORE = 16        -- positions always present
local NFIELDS = 41

local TERMINAL = {completed = true, failed = true, cancelled = true}
-- A wake list is trimmed back to WAKE_CAP tokens once it holds twice as many: one LTRIM per
-- WAKE_CAP pushes while nobody consumes them (producers with idle-less workers), not one per
-- push. A token only means "look again", so a few extra cost a few empty claims at most.
local WAKE_CAP = 8
local WAKE_LAST = '7'  -- LTRIM's last index (WAKE_CAP - 1), as a string
-- The record is rewritten whole on every change (and so is its AOF entry): a payload
-- longer than this goes to its own key, written once, so the record stays small.
local INLINE_MAX = 256
-- unpack() has a C-stack limit; multi-member commands are sent in chunks of this many args.
local CHUNK = 4000

-- A partition setting (kconfig: history_cap, retention_ms, part), or `default` when unset.
local function cfg(name, default)
  -- One HGET per setting used, at most once per call: most calls need one setting, and
  -- HGETALL plus a Lua loop over the hash cost three times as much (bench.engine_ir).
  local v = _cfg[name]
  if v == nil then
    v = redis.call('HGET', kconfig(), name) or ''
    _cfg[name] = v
  end
  if v == '' then return default end
  return tonumber(v) or v
end

-- A record as the table of its fields by position, read once per call; nil when absent.
-- unpack_limit from offset 4 (past the array16 header and the false in slot ID) returns its
-- next offset and then the other fields: one table constructor takes them all, the offset
-- landing in slot ID.
local function load(id)
  local r = _recs[id]
  if r ~= nil then return r or nil end
  local raw = redis.call('GET', kflow(id))
  if not raw then
    _recs[id] = false
    return nil
  end
  r = {cmsgpack.unpack_limit(raw, NFIELDS, 4)}
  r[ID] = id
  _recs[id] = r
  return r
end

-- A record that does not exist yet; flush() writes it.
local function new_record(id)
  local r = {id, false, false, false, false, false, false, false,
             false, false, false, false, false, false, false, false}
  _recs[id] = r
  return r
end

-- Mark a record changed without set(): hot paths assign its CORE fields directly.
local function touch(r)
  local id = r[ID]
  if not _dirty[id] then
    _dirty[id] = true
    _order[#_order + 1] = id
  end
end

-- Set one field past CORE: the positions between the array's end and it become false (no
-- hole); clearing a field the array does not reach yet is a no-op.
local function put(r, k, v)
  local n = #r
  if k > n then
    if not v then return end
    for i = n + 1, k - 1 do r[i] = false end
  end
  r[k] = v
end

-- Set record fields: set(r, position, value, ...); a false value clears the field. Up to four
-- pairs go without a Lua table for the arguments (most calls).
local function set(r, k1, v1, k2, v2, k3, v3, k4, v4, ...)
  touch(r)
  if k1 > CORE then put(r, k1, v1) else r[k1] = v1 end
  if not k2 then return end
  if k2 > CORE then put(r, k2, v2) else r[k2] = v2 end
  if not k3 then return end
  if k3 > CORE then put(r, k3, v3) else r[k3] = v3 end
  if not k4 then return end
  if k4 > CORE then put(r, k4, v4) else r[k4] = v4 end
  if select('#', ...) > 0 then set(r, ...) end
end

-- Buffer a sorted-set change: score a string (flush() sends it as is), false to remove.
local function zset(key, member, score)
  local m = _z[key]
  if not m then m = {}; _z[key] = m end
  m[member] = score
end

local function sset(key, member, present)
  local m = _s[key]
  if not m then m = {}; _s[key] = m end
  m[member] = present
end

local function count(ftype, state, delta)
  local m = _counts[ftype]
  if not m then m = {}; _counts[ftype] = m end
  m[state] = (m[state] or 0) + delta
end

local function wake(ftype, state)
  _woken[kwake(ftype, state)] = true
end

-- cmd key args... in chunks (key nil: cmd args...).
local function send(cmd, key, args)
  for i = 1, #args, CHUNK do
    if key then redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
    else redis.call(cmd, unpack(args, i, math.min(i + CHUNK - 1, #args))) end
  end
end

-- Every changed record goes in one MSET (a SET each cost ~3,000 Ir more per record: the call,
-- its status reply made a Lua table, its own AOF entry); history needs an RPUSH per Flow.
local function flush_records()
  local cap = cfg('history_cap', 10000)
  local kv = {}
  for i, id in ipairs(_order) do
    local r = _recs[id]
    r[ID] = false
    kv[2 * i - 1], kv[2 * i] = kflow(id), cmsgpack.pack(r)
    r[ID] = id
  end
  if #kv > 0 then send('MSET', nil, kv) end
  -- An RPUSH per run of one Flow's entries (a Flow's events are mostly consecutive; when not,
  -- each run is pushed in turn, so its list still gets them in order).
  local hist, i = _hist, 1
  while i <= _nh do
    local id = hist[i]
    local hk, len = khistory(id), nil
    if hist[i + 2] ~= id then
      len = redis.call('RPUSH', hk, hist[i + 1])
      i = i + 2
    elseif hist[i + 4] ~= id then
      len = redis.call('RPUSH', hk, hist[i + 1], hist[i + 3])
      i = i + 4
    else
      local e = {}
      while hist[i] == id do e[#e + 1] = hist[i + 1]; i = i + 2 end
      len = redis.call('RPUSH', hk, unpack(e))
    end
    if len > cap then redis.call('LTRIM', hk, str(-cap), '-1') end
  end
  _dirty, _order, _hist, _nh = {}, {}, {}, 0
end

-- Write everything buffered. A wake token per (type, state) made due during the call; LTRIM
-- keeps the lists short because a token only means "look again", and a claim that leaves
-- work behind re-wakes.
local function flush()
  flush_records()
  -- Counts first: a state whose count is new (or was 0) gets listed in kstates and its type
  -- in ktypes (never unlisted, so only then can they be missing), not on every call.
  for ftype, m in pairs(_counts) do
    local key = kcounts(ftype)
    for field, delta in pairs(m) do
      if delta ~= 0 and redis.call('HINCRBY', key, field, str(delta)) == delta and delta > 0
          and field ~= 'running' then
        sset(kstates(ftype), field, true)
        sset(ktypes(), ftype, true)
      end
    end
  end
  for key, m in pairs(_z) do
    local add, rem = {}, {}
    for member, score in pairs(m) do
      if score then add[#add + 1] = score; add[#add + 1] = member else rem[#rem + 1] = member end
    end
    if #rem > 0 then send('ZREM', key, rem) end
    if #add > 0 then send('ZADD', key, add) end
  end
  for key, m in pairs(_s) do
    local add, rem = {}, {}
    for member, present in pairs(m) do
      if present then add[#add + 1] = member else rem[#rem + 1] = member end
    end
    if #rem > 0 then send('SREM', key, rem) end
    if #add > 0 then send('SADD', key, add) end
  end
  for key, _ in pairs(_woken) do
    if redis.call('LPUSH', key, '1') > 2 * WAKE_CAP then
      redis.call('LTRIM', key, '0', WAKE_LAST)
    end
  end
  _z, _s, _counts, _woken = {}, {}, {}, {}
end

-- A Flow's state as its handler sees it: a running Flow is in the state it was leased in.
-- An operator command's guard: the Flow is still as the caller saw it. `if_version` '' = any
-- version; `if_states` a comma-separated list of states, '' = any. An error reply, or nil.
local function changed_since(r, if_states, if_version)
  if if_version ~= '' and r[VER] ~= tonumber(if_version) then return 'ERR flow stale version' end
  if if_states ~= '' and not string.find(',' .. if_states .. ',', ',' .. r[STATE] .. ',', 1, true)
  then
    return 'ERR flow state mismatch'
  end
end

local function logical_state(r)
  if r[STATE] == 'running' then return r[RUN_STATE] end
  return r[STATE]
end

-- The payload, inline in the record or in its own key (kpayload) when over INLINE_MAX.
local function get_payload(r)
  if r[PB] then return redis.call('GET', kpayload(r[ID])) or '' end
  return r[PAYLOAD] or ''
end

local function set_payload(r, data)
  if #data > INLINE_MAX then
    redis.call('SET', kpayload(r[ID]), data)
    set(r, PB, 1, PAYLOAD, false)
  else
    if r[PB] then redis.call('DEL', kpayload(r[ID])) end
    set(r, PB, false, PAYLOAD, data ~= '' and data)
  end
end

-- Store named values (a msgpack map name -> bytes); a name already holding other bytes is
-- an error unless `override`.
local function put_values(id, packed, override)
  if not packed or packed == '' then return nil end
  local vals = cmsgpack.unpack(packed)
  local vk = kvalues(id)
  for name, data in pairs(vals) do
    local old = redis.call('HGET', vk, name)
    if old and old ~= data and not override then
      return 'ERR flow value ' .. name .. ' already exists with different digest; use OVERRIDE true'
    end
  end
  for name, data in pairs(vals) do redis.call('HSET', vk, name, data) end
  return nil
end
