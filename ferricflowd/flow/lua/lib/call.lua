--[[ lib/call.lua: the first include of the ferricflow function library: the call.

ferricflowd/flow/store.py builds one Redis Functions library: `#!lua name=ferricflow_<digest>`,
the includes of lib/ in store.INCLUDES order, then each command `<name>.lua` as the body of a
function `ff_<digest>_<name>` that first calls begin(keys, args). The library is loaded once
(FUNCTION LOAD), so the includes' helpers are defined once, not on every call as with
EVALSHA; a command script reads KEYS and ARGV as an EVAL script would. The includes are one
Lua chunk: each may use what the ones before it define, never what comes after.

  call.lua      the per-call state and begin(), the clock, numbers as decimal strings
  keys.lua      the key families: one builder each (kflow, kdue, klease, ...)
  record.lua    record layout, partition settings, the unit of work (load, set, flush)
  history.lua   history entries (event) and the event shapes (EV_*)
  lease.lua     where a Flow rests (rest, unrest), lease checks, release
  children.lua  terminal Flows (finish) and children groups, which call each other
  grant.lua     retry policies, lease requests and granting a lease

This include holds the state of one call, declared here for every include so that begin()
resets all of it in one place. It uses nothing.

Redis's Lua hashes every byte of every string it makes (upstream Lua samples at most 32): a
string costs a few hundred Ir plus ~11 per byte, so the strings made per item are kept few.
]]

-- Per-call state: the library is loaded once, and begin() starts every function call.
local KEYS, ARGV, T   -- the call's keys and arguments; T = KEYS[1], the partition prefix
local _now, _now_s    -- the call's clock (ms), and as a string
local _now_mp         -- the clock msgpack-encoded (history entries)
local _until          -- now + the partition's retention (terminal Flows)
local _cfg            -- the partition's settings read in this call (record.lua cfg)
local _policies       -- retry policies read in this call (grant.lua policy)
-- The unit of work (record.lua).
local _recs          -- id -> record table, false when absent
local _dirty         -- id -> true for every changed record
local _order         -- dirty ids, first change first
local _hist, _nh     -- history to append: id, packed entry, id, entry, ... (_nh of them);
                     -- flat, not a table per Flow (a table and its growth cost ~2,000 Ir)
local _z             -- sorted-set key -> {member -> score, or false to remove}
local _s             -- set key -> {member -> true to add, false to remove}
local _counts        -- counter hash key -> {field -> delta}
local _woken         -- wake-list keys
local _memo          -- key names built in this call (keys.lua)

local function begin(keys, args)
  KEYS, ARGV, T = keys, args, keys[1]
  _now, _now_s, _now_mp, _until, _cfg, _policies = nil, nil, nil, nil, {}, {}
  _recs, _dirty, _order, _hist, _nh = {}, {}, {}, {}, 0
  _z, _s, _counts, _woken, _memo = {}, {}, {}, {}, {}
end

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
