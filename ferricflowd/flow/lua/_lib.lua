--[[ _lib.lua: the head of the ferricflow function library (not a command itself).

ferricflowd/flow/store.py builds one Redis Functions library from this file and every
command script: `#!lua name=ferricflow_<digest>`, this file, then each `<name>.lua` as the
body of a function `ff_<digest>_<name>` that first calls begin(keys, args). The library is
loaded once (FUNCTION LOAD), so these helpers are defined once, not on every call as with
EVALSHA; a command script reads KEYS and ARGV as an EVAL script would.

Key families (KEYS[1] is the partition prefix "{<ns>:<p>}:"; every other key a script
touches is that prefix plus a suffix, so all of them share one hash tag and one cluster slot;
ferricflowd/flow/keys.py builds the same names on the Python side):

  f:<id>                    string  the Flow record: one msgpack array of its fields (below)
  b:<id>                    string  the payload, when longer than INLINE_MAX bytes
  h:<id>                    list    history, one msgpack [version, at_ms, event, details] each
  v:<id>                    hash    named values
  k:<id>                    hash    children of a parent: child id -> "<status>|<partition>|<group>"
  d:<type>:<state>:<prio>   zset    due Flows, score = due time (ms)
  l:<type>                  zset    running Flows, score = lease deadline (ms)
  w:<worker>                set     ids leased by one worker id
  t:<type>:<status>         zset    terminal Flows, score = terminal time (ms)
  q:<type>:<state>          zset    parked Flows (parents waiting for children), score = since (ms)
  x:<type>:<state>          list    wake tokens for idle workers (capped)
  c:<type>                  hash    Flow count per state ("running" included)
  s:<type>                  set     states seen for a type
  p:<type>                  hash    retry policy per state ("*" = the type's default)
  o                         list    outbox: child -> parent notices for other partitions
  types                     set     types seen in this partition
  cfg                       hash    partition settings: history_cap, retention_ms, part

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
Redis's Lua hashes every byte of every string it makes (upstream Lua samples at most 32): a
string costs a few hundred Ir plus ~11 per byte, so the strings made per item are kept few.
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

-- Per-call state: the library is loaded once, and begin() starts every function call.
local KEYS, ARGV, T   -- the call's keys and arguments; T = KEYS[1], the partition prefix
local _now, _now_s    -- the call's clock (ms), and as a string
local _now_mp         -- the clock msgpack-encoded (history entries)
local _until          -- now + the partition's retention (terminal Flows)
local _cfg            -- the partition's settings read in this call
local _policies       -- retry policies read in this call
-- The unit of work (see the header).
local _recs          -- id -> record table, false when absent
local _dirty         -- id -> true for every changed record
local _order         -- dirty ids, first change first
local _hist, _nh     -- history to append: id, packed entry, id, entry, ... (_nh of them);
                     -- flat, not a table per Flow (a table and its growth cost ~2,000 Ir)
local _z             -- sorted-set key -> {member -> score, or false to remove}
local _s             -- set key -> {member -> true to add, false to remove}
local _counts        -- counter hash key -> {field -> delta}
local _woken         -- wake-list keys
local _memo          -- key names built in this call: kind -> type -> (sub -> name | name)

local function begin(keys, args)
  KEYS, ARGV, T = keys, args, keys[1]
  _now, _now_s, _now_mp, _until, _cfg, _policies = nil, nil, nil, nil, {}, {}
  _recs, _dirty, _order, _hist, _nh = {}, {}, {}, {}, 0
  _z, _s, _counts, _woken, _memo = {}, {}, {}, {}, {}
end

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

-- Numbers are written as decimal strings with %d: Lua's own number-to-string ("%.14g", and
-- "%.17g" for a number passed to redis.call) is a float conversion, the costliest step of
-- a claim item before this. Every number the engine stores is an integer (ms, counters).
local function str(n)
  if type(n) ~= 'number' then return n end
  if n % 1 == 0 then return string.format('%d', n) end
  return tostring(n)
end

-- Small integers as decimal strings, cached across calls (a string.format costs ~1,500 Ir, a
-- table lookup ~100): fencing tokens, compared with ARGV and put in lease tokens. Hot paths
-- look up DEC inline and call dec() on a miss.
local DEC = {}
local function dec(n)
  local s = DEC[n]
  if s then return s end
  s = str(n)
  if n >= 0 and n < 4096 and n % 1 == 0 then DEC[n] = s end
  return s
end

local function now_ms(override)
  if _now then return _now end
  if override and override ~= '' then
    _now = tonumber(override)
  else
    local t = redis.call('TIME')
    _now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  _now_s = str(_now)
  return _now
end

-- now_ms() as a string, for keys, tokens and command arguments.
local function now_str()
  now_ms()
  return _now_s
end

local function cfg(name, default)
  -- One HGET per setting used, at most once per call: most calls need one setting, and
  -- HGETALL plus a Lua loop over the hash cost three times as much (bench.engine_ir).
  local v = _cfg[name]
  if v == nil then
    v = redis.call('HGET', T .. 'cfg', name) or ''
    _cfg[name] = v
  end
  if v == '' then return default end
  return tonumber(v) or v
end

local function kf(id) return T .. 'f:' .. id end

-- T .. kind .. ftype, or T .. kind .. ftype .. ':' .. sub: built once per call (a batch
-- names the same few keys for every item, and a concatenation costs more than two lookups).
local function tkey(kind, ftype, sub)
  local m = _memo[kind]
  if not m then m = {}; _memo[kind] = m end
  local k = m[ftype]
  if sub == nil then
    if not k then k = T .. kind .. ftype; m[ftype] = k end
    return k
  end
  if not k then k = {}; m[ftype] = k end
  local name = k[sub]
  if not name then name = T .. kind .. ftype .. ':' .. sub; k[sub] = name end
  return name
end

local PRIO_SUFFIX = {['0'] = ':0', ['1'] = ':1', ['2'] = ':2', [0] = ':0', [1] = ':1', [2] = ':2'}
local function kdue(ftype, state, prio) return tkey('d:', ftype, state .. PRIO_SUFFIX[prio]) end

-- A record as the table of its fields by position, read once per call; nil when absent.
-- unpack_limit from offset 4 (past the array16 header and the false in slot ID) returns its
-- next offset and then the other fields: one table constructor takes them all, the offset
-- landing in slot ID.
local function load(id)
  local r = _recs[id]
  if r ~= nil then return r or nil end
  local raw = redis.call('GET', kf(id))
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
  _woken[tkey('x:', ftype, state)] = true
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
    kv[2 * i - 1], kv[2 * i] = kf(id), cmsgpack.pack(r)
    r[ID] = id
  end
  if #kv > 0 then send('MSET', nil, kv) end
  -- An RPUSH per run of one Flow's entries (a Flow's events are mostly consecutive; when not,
  -- each run is pushed in turn, so its list still gets them in order).
  local hist, i = _hist, 1
  while i <= _nh do
    local id = hist[i]
    local hk, len = T .. 'h:' .. id, nil
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
  -- Counts first: a state whose count is new (or was 0) gets listed in s:<type> and its type
  -- in `types` (never unlisted, so only then can they be missing), not on every call.
  for ftype, m in pairs(_counts) do
    local key = tkey('c:', ftype)
    for field, delta in pairs(m) do
      if delta ~= 0 and redis.call('HINCRBY', key, field, str(delta)) == delta and delta > 0
          and field ~= 'running' then
        sset(tkey('s:', ftype), field, true)
        sset(T .. 'types', ftype, true)
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
    if redis.call('LPUSH', key, '1') > 2 * WAKE_CAP then redis.call('LTRIM', key, '0', WAKE_LAST) end
  end
  _z, _s, _counts, _woken = {}, {}, {}, {}
end

local function logical_state(r)
  if r[STATE] == 'running' then return r[RUN_STATE] end
  return r[STATE]
end

local EMPTY = {}

-- History entries are concatenations of msgpack pieces, not cmsgpack.pack of a details table:
-- a Lua table and each string cmsgpack makes cost ~2,000 Ir, the whole entry ~10,000 by
-- pack and ~3,000 this way (bench.engine_ir). The bytes are what cmsgpack would write.
local MPINT = {}  -- small integer -> its msgpack encoding; kept across calls (library state)
local SHDR = {}   -- string length -> its msgpack str header; kept across calls

local function mpint(v)
  local e = MPINT[v]
  if e then return e end
  if v == _now then
    if not _now_mp then _now_mp = cmsgpack.pack(v) end
    return _now_mp
  end
  e = cmsgpack.pack(v)
  if v >= 0 and v < 4096 then MPINT[v] = e end
  return e
end

local function strhdr(n)
  local h = SHDR[n]
  if h then return h end
  local char = string.char
  if n < 32 then h = char(160 + n)
  elseif n < 256 then h = '\217' .. char(n)
  elseif n < 65536 then h = '\218' .. char(math.floor(n / 256), n % 256)
  else
    return '\219' .. char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                          math.floor(n / 256) % 256, n % 256)
  end
  SHDR[n] = h
  return h
end

-- An event kind: its name and the keys of its details map ('#' before a key: the value is an
-- integer, else a string), encoded on first use (the library's load runs without the
-- string and cmsgpack modules).
local function shape(name, ...)
  return {name = name, keys = {...}}
end

local function encode_shape(s)
  for i, k in ipairs(s.keys) do
    if string.sub(k, 1, 1) == '#' then k = string.sub(k, 2); s['int' .. i] = true end
    s[i] = cmsgpack.pack(k)
  end
  for i = #s.keys + 1, 4 do s[i] = '' end
  s.n = #s.keys
  s.head = cmsgpack.pack(s.name) .. string.char(128 + s.n)
  return s.head
end

local EV_CREATED = shape('created', 'state', '#due')
local EV_CREATED_CHILD = shape('created', 'state', 'parent')
local EV_CLAIMED = shape('claimed', 'worker', '#fencing', '#attempt')
local EV_COMPLETED = shape('completed', '#fencing')
local EV_FAILED = shape('failed', 'error', '#fencing')
local EV_FAILED_CAUSE = shape('failed', 'error', 'cause')
local EV_CANCELLED = shape('cancelled', 'reason')
local EV_TRANSITIONED = shape('transitioned', 'from', 'to', '#due')
local EV_PARKED = shape('transitioned', 'from', 'to', '#parked')
local EV_RELEASED = shape('lease_released', 'cause')
local EV_EXTENDED = shape('lease_extended', '#deadline')
local EV_RESOLVED = shape('children_resolved', 'result', 'to')
local EV_SPAWNED = shape('children_spawned', 'group', '#n', 'wait', 'wait_state')
local EV_RETRY_SCHEDULED = shape('retry', 'decision', 'error', '#attempt', '#due')
local EV_RETRY_EXHAUSTED = shape('retry', 'decision', 'error', '#attempt', 'to')
local EV_SIGNALED = shape('signaled', 'name')
local EV_SIGNALED_TO = shape('signaled', 'name', 'from', 'to')
local EV_VALUES_PUT = shape('values_put', 'names')

-- Append one history event of shape `s` with its detail values v1..v4; every accepted
-- mutation bumps the version by one. An entry is the msgpack array [version, at_ms, event,
-- details], built as one concatenation; a Lua function call costs ~350 Ir, so the cache
-- lookups are inline and the helpers run only on a miss.
local function event(r, s, v1, v2, v3, v4)
  local ver = (r[VER] or 0) + 1
  touch(r)
  r[VER], r[UPDATED] = ver, _now or now_ms()
  local head = s.head or encode_shape(s)
  local a1, b1, a2, b2, a3, b3, a4, b4 = '', '', '', '', '', '', '', ''
  if s.int1 then a1 = MPINT[v1] or mpint(v1) else a1, b1 = SHDR[#v1] or strhdr(#v1), v1 end
  local n = s.n
  if n > 1 then
    if s.int2 then a2 = MPINT[v2] or mpint(v2) else a2, b2 = SHDR[#v2] or strhdr(#v2), v2 end
    if n > 2 then
      if s.int3 then a3 = MPINT[v3] or mpint(v3) else a3, b3 = SHDR[#v3] or strhdr(#v3), v3 end
      if n > 3 then
        if s.int4 then a4 = MPINT[v4] or mpint(v4) else a4, b4 = SHDR[#v4] or strhdr(#v4), v4 end
      end
    end
  end
  local nh = _nh
  _nh = nh + 2
  _hist[nh + 1], _hist[nh + 2] = r[ID], '\148' .. (MPINT[ver] or mpint(ver)) .. (_now_mp or mpint(_now)) .. head .. s[1]
    .. a1 .. b1 .. s[2] .. a2 .. b2 .. s[3] .. a3 .. b3 .. s[4] .. a4 .. b4
  return ver
end

local function get_payload(r)
  if r[PB] then return redis.call('GET', T .. 'b:' .. r[ID]) or '' end
  return r[PAYLOAD] or ''
end

local function set_payload(r, data)
  if #data > INLINE_MAX then
    redis.call('SET', T .. 'b:' .. r[ID], data)
    set(r, PB, 1, PAYLOAD, false)
  else
    if r[PB] then redis.call('DEL', T .. 'b:' .. r[ID]) end
    set(r, PB, false, PAYLOAD, data ~= '' and data)
  end
end

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
    if not TERMINAL[state] then zset(tkey('q:', r[TYPE], state), r[ID], now_str()) end
  end
  count(r[TYPE], state, 1)
end

-- Take a Flow out of wherever it is now (due set, lease, parked) and out of its count.
local function unrest(r)
  if r[STATE] == 'running' then
    zset(tkey('l:', r[TYPE]), r[ID], false)
    if r[OWNER] then sset(tkey('w:', r[OWNER]), r[ID], false) end
    touch(r)
    r[OWNER], r[TOKEN], r[DEADLINE], r[RUN_STATE] = false, false, false, false
  elseif r[DUE] then
    zset(kdue(r[TYPE], r[STATE], r[PRIO] or '0'), r[ID], false)
  elseif not TERMINAL[r[STATE]] then
    zset(tkey('q:', r[TYPE], r[STATE]), r[ID], false)
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
  set(p, GRP_OPEN, false, GRP_PARKED, false)
  if p[GRP_RES] == 'ok' then
    unrest(p)
    set(p, ATTEMPT, 1)
    rest(p, p[GRP_STATE], now_ms())
    event(p, EV_RESOLVED, 'ok', p[GRP_STATE])
  else
    local err = p[GRP_ERR] or 'a child failed'
    finish(p, 'failed', 'fail', ERROR, err, EV_FAILED_CAUSE, err, 'child')
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
  if not p or TERMINAL[p[STATE]] or not p[GRP_OPEN] or (p[GRP_RES] or '') ~= '' then return end
  if p[GRP_NAME] ~= kgroup then return end
  local done = (p[GRP_DONE] or 0) + 1
  local ok = p[GRP_OK] or 0
  if status == 'completed' then ok = ok + 1 end
  set(p, GRP_DONE, done, GRP_OK, ok)
  local n = p[GRP_N]
  local res = ''
  if p[GRP_WAIT] == 'any' then
    if ok > 0 then res = 'ok'
    elseif done >= n then res = (p[GRP_FAIL] == 'ignore') and 'ok' or 'failed' end
  else
    if status ~= 'completed' and p[GRP_FAIL] ~= 'ignore' then res = 'failed'
    elseif done >= n then res = 'ok' end
  end
  if res == '' then return end
  set(p, GRP_RES, res)
  if res == 'failed' then set(p, GRP_ERR, 'child ' .. child_id .. ' ' .. status) end
  -- A parent still running its handler learns the result when its outcome arrives.
  if p[GRP_PARKED] then settle_group(p) end
end

-- After a Flow became terminal: tell its parent (inline or via the outbox).
local function parent_hook(r, status)
  if not r[PARENT] then return end
  if (r[PP] or '') == tostring(cfg('part', '')) then
    child_done(r[PARENT], r[ID], status)
  else
    -- Outbox entry: {target partition, target id, source id, kind}; see deliver.lua.
    redis.call('RPUSH', T .. 'o', cmsgpack.pack({r[PP], r[PARENT], r[ID], status}))
  end
end

-- Make a Flow terminal; record field `fk` is set to `fv` alongside (none when fk is nil), and
-- the event is `s` with details v1..v4 (see event()).
finish = function(r, status, kind, fk, fv, s, v1, v2, v3, v4)
  unrest(r)
  if not _until then _until = now_ms() + cfg('retention_ms', 604800000) end
  r[LO] = kind
  put(r, UNTIL, _until)
  if fk then set(r, fk, fv) end
  rest(r, status, nil)
  zset(tkey('t:', r[TYPE], status), r[ID], now_str())
  local ver = event(r, s, v1, v2, v3, v4)
  parent_hook(r, status)
  return ver
end

-- Cancel the unfinished children of `p`: inline in this partition (recursively), through the
-- outbox in others.
cascade_cancel = function(p, reason)
  local flat = redis.call('HGETALL', T .. 'k:' .. p[ID])
  for i = 1, #flat, 2 do
    local cid = flat[i]
    local kstatus, kpart = parse_kid(flat[i + 1])
    if kstatus == 'pending' then
      if kpart == tostring(cfg('part', '')) then
        local c = load(cid)
        if c and not TERMINAL[c[STATE]] then
          finish(c, 'cancelled', 'cancel', ERROR, reason, EV_CANCELLED, reason)
          cascade_cancel(c, reason)
        end
      else
        redis.call('RPUSH', T .. 'o', cmsgpack.pack({kpart, cid, p[ID], 'cancel'}))
      end
    end
  end
end

-- Release a running Flow's lease: due again at once in its logical state.
local function release(r, cause)
  local state = r[RUN_STATE]
  unrest(r)
  set(r, LO, 'released')
  rest(r, state, now_ms())
  return event(r, EV_RELEASED, cause)
end

local DEFAULT_POLICY = {max_retries = 3, backoff = 'exponential', base_ms = 1000,
                        max_ms = 30000, jitter_pct = 20, exhausted_to = 'failed', max_crashes = 3}

local function policy(ftype, state)
  local cache_key = ftype .. '\0' .. state
  local pol = _policies[cache_key]
  if pol then return pol end
  local pk = T .. 'p:' .. ftype
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
  spec.wkey = T .. 'w:' .. spec.worker
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
  zset(tkey('l:', r[TYPE]), id, spec.deadline_s)
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
    local got = redis.call('HMGET', T .. 'v:' .. id, unpack(spec.names))
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
