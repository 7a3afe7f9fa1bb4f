--[[ lib/history.lua: history entries and the event shapes.

Uses the clock and the history buffer (_now, _now_mp, _hist, _nh: call.lua) and touch()
and the record positions (record.lua); flush_records (record.lua) pushes what event() buffers.
]]

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
