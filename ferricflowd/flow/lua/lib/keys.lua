--[[ lib/keys.lua: the key families of a partition, one builder each.

Uses T and _memo (call.lua). KEYS[1], T, is the partition prefix "{<ns>:<p>}:"; every other
key a script touches is T plus a suffix, built here and nowhere else, so all of them share
one hash tag and one cluster slot. ferricflowd/flow/keys.py builds the same names on the
Python side (KeySpace, FAMILIES); tests/unit/test_key_catalogue.py runs these builders
against it.

  key                          type    builder    holds
  f:<id>                       string  kflow      the Flow record, a msgpack array (record.lua)
  b:<id>                       string  kpayload   the payload, when longer than INLINE_MAX bytes
  h:<id>                       list    khistory   history: msgpack [version, at_ms, event, details]
  v:<id>                       hash    kvalues    named values
  k:<id>                       hash    kchildren  children: id -> "<status>|<partition>|<group>"
  d:<type>:<state>:<priority>  zset    kdue       due Flows, score = due time (ms)
  l:<type>                     zset    klease     running Flows, score = lease deadline (ms)
  w:<worker>                   set     kworker    ids leased by one worker id
  t:<type>:<status>            zset    kterminal  terminal Flows, score = terminal time (ms)
  q:<type>:<state>             zset    kparked    parked Flows (parents waiting for children), score = since (ms)
  x:<type>:<state>             list    kwake      wake tokens for idle workers (capped)
  c:<type>                     hash    kcounts    Flow count per state ("running" included)
  s:<type>                     set     kstates    states seen for a type
  p:<type>                     hash    kpolicy    retry policy per state ("*" = the default)
  o                            list    koutbox    child -> parent notices for other partitions
  types                        set     ktypes     types seen in this partition
  cfg                          hash    kconfig    settings: history_cap, retention_ms, part
  sc:<name>                    hash    kschedule  a schedule: its spec, next due, state
  sh:<name>                    list    kschedule_fires a schedule's recent fires (msgpack, capped)
  sq                           zset    kschedule_queue active schedules, score = next fire time (ms)
  sn                           hash    kschedule_names every schedule: name -> origin ("api", "config")
]]

-- A Flow's own keys, made on each use: a call seldom names one twice.
local function kflow(id) return T .. 'f:' .. id end
local function kpayload(id) return T .. 'b:' .. id end
local function khistory(id) return T .. 'h:' .. id end
local function kvalues(id) return T .. 'v:' .. id end
local function kchildren(id) return T .. 'k:' .. id end

-- A builder of T .. kind .. name whose names are kept for the call: a batch names the same
-- few keys for every item, and a concatenation costs more than two table lookups.
local function named(kind)
  return function(name)
    local m = _memo[kind]
    if not m then m = {}; _memo[kind] = m end
    local k = m[name]
    if not k then k = T .. kind .. name; m[name] = k end
    return k
  end
end

-- The same for T .. kind .. ftype .. ':' .. sub.
local function named2(kind)
  return function(ftype, sub)
    local m = _memo[kind]
    if not m then m = {}; _memo[kind] = m end
    local k = m[ftype]
    if not k then k = {}; m[ftype] = k end
    local name = k[sub]
    if not name then name = T .. kind .. ftype .. ':' .. sub; k[sub] = name end
    return name
  end
end

local klease = named('l:')
local kworker = named('w:')
local kcounts = named('c:')
local kstates = named('s:')
local kterminal = named2('t:')
local kparked = named2('q:')
local kwake = named2('x:')

-- kdue's priority arrives as a number or as the string ARGV and records hold ('0'..'2').
local PRIO_SUFFIX = {['0'] = ':0', ['1'] = ':1', ['2'] = ':2', [0] = ':0', [1] = ':1', [2] = ':2'}

-- Kept for the call too, by type, state and priority: no string is made to look one up.
local function kdue(ftype, state, prio)
  local m = _memo['d:']
  if not m then m = {}; _memo['d:'] = m end
  local byst = m[ftype]
  if not byst then byst = {}; m[ftype] = byst end
  local k = byst[state]
  if not k then k = {}; byst[state] = k end
  local name = k[prio]
  if not name then
    name = T .. 'd:' .. ftype .. ':' .. state .. PRIO_SUFFIX[prio]
    k[prio] = name
  end
  return name
end

-- Read at most once or twice per call: no memo.
local function kpolicy(ftype) return T .. 'p:' .. ftype end
local function koutbox() return T .. 'o' end
local function ktypes() return T .. 'types' end
local function kconfig() return T .. 'cfg' end
local function kschedule(name) return T .. 'sc:' .. name end
local function kschedule_fires(name) return T .. 'sh:' .. name end
local function kschedule_queue() return T .. 'sq' end
local function kschedule_names() return T .. 'sn' end
