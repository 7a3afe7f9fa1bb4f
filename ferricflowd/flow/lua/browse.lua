--[[ browse: one page of a type's Flows in this partition, in index order, after a cursor.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV     now_ms override ('' = TIME), type, order ('asc' | 'desc'), cursor score ('' = from
         the start), cursor member, cursor inclusive ('1': an entry equal to the cursor
         comes after it), limit (matches), budget (entries examined at most),
         updated_before ('' = none), updated_after, min_attempts, error_contains (ASCII
         lower case), n_indexes, then n_indexes items of 4: kind ('due' | 'parked' |
         'running' | 'terminal'), state (the status for terminal, '' for running), min
         score ('' = -inf), max score ('' = +inf)
Reply    {exhausted (1: nothing is left after this page), frontier score, frontier member,
          examined, then 4 fields per match, flat: score, member, index number (1-based,
          of the ARGV items), the stored record}
Order    entries are ordered by (score, member bytes) across the indexes, 'desc' reversed;
         the page holds every match between the cursor and the frontier. Each index is
         entered at the cursor by rank (ZRANK, or a binary search over the ties of the
         cursor's score when its member left the index), so a page costs O(indexes x
         (log N + budget)) however large the index is.
Filters  a record must still be where its index says; updated_* apply to the record's
         updated time (terminal indexes: the caller narrows their score, the end time);
         error_contains is a case-insensitive (ASCII) substring of the last error.
]]

now_ms(ARGV[1])
local ftype, desc = ARGV[2], ARGV[3] == 'desc'
local cur_s, cur_m, incl = tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1'
local limit, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
local upd_lt, upd_ge, min_att = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local needle = ARGV[12]
local byte = string.byte

-- (s1, m1) before (s2, m2) in ascending order: members compare as bytes, as Redis orders
-- them (Lua's < on strings follows the server's collation locale).
local function before(s1, m1, s2, m2)
  if s1 ~= s2 then return s1 < s2 end
  if m1 == m2 then return false end
  for i = 1, math.min(#m1, #m2) do
    local x, y = byte(m1, i), byte(m2, i)
    if x ~= y then return x < y end
  end
  return #m1 < #m2
end

-- e1 comes before e2 in this page's order (entries are {score, member, index}).
local function ahead(e1, e2)
  if desc then return before(e2[1], e2[2], e1[1], e1[2]) end
  return before(e1[1], e1[2], e2[1], e2[2])
end

-- How many entries of `key` sort before (s, m), plus that entry itself when `with`.
local function rank_of(key, s, m, with)
  local r = redis.call('ZRANK', key, m)
  if r and tonumber(redis.call('ZSCORE', key, m)) == s then return with and r + 1 or r end
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. str(s))
  local hi = redis.call('ZCOUNT', key, '-inf', str(s))
  while lo < hi do  -- the ties of score s, by member
    local mid = math.floor((lo + hi) / 2)
    if before(s, redis.call('ZRANGE', key, mid, mid)[1], s, m) then lo = mid + 1 else hi = mid end
  end
  return lo
end

local ents, cap = {}, nil

-- Read up to `budget` entries of one index from the cursor on; the last one read bounds
-- the page when the index has more.
local function read(key, idx, min, max)
  local lo = min ~= '' and redis.call('ZCOUNT', key, '-inf', '(' .. min) or 0
  local hi = max ~= '' and redis.call('ZCOUNT', key, '-inf', max) or redis.call('ZCARD', key)
  local a, b, more
  if desc then
    if cur_s then hi = math.min(hi, rank_of(key, cur_s, cur_m, incl)) end
    a, b = math.max(lo, hi - budget), hi - 1
    more = a > lo
  else
    if cur_s then lo = math.max(lo, rank_of(key, cur_s, cur_m, not incl)) end
    a, b = lo, math.min(hi, lo + budget) - 1
    more = b < hi - 1
  end
  if b < a then return end
  local got = redis.call('ZRANGE', key, a, b, 'WITHSCORES')
  local last
  for i = 1, #got, 2 do
    last = {tonumber(got[i + 1]), got[i], idx}
    ents[#ents + 1] = last
  end
  if desc then last = ents[#ents - #got / 2 + 1] end
  if more and (not cap or ahead(last, cap)) then cap = last end
end

local kinds, states = {}, {}
local n = tonumber(ARGV[13])
for i = 1, n do
  local a = 14 + (i - 1) * 4
  local kind, st, min, max = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  kinds[i], states[i] = kind, st
  if kind == 'due' then
    for prio = 0, 2 do read(kdue(ftype, st, prio), i, min, max) end
  elseif kind == 'parked' then read(tkey('q:', ftype, st), i, min, max)
  elseif kind == 'running' then read(tkey('l:', ftype), i, min, max)
  else read(tkey('t:', ftype, st), i, min, max) end
end
if #ents > 1 then table.sort(ents, ahead) end

-- A record as the page's filters see it: still where its index says, and matching.
local function keep(raw, idx)
  local r = {cmsgpack.unpack_limit(raw, NFIELDS, 4)}
  local kind = kinds[idx]
  if kind == 'running' then
    if r[STATE] ~= 'running' then return false end
  elseif r[STATE] ~= states[idx] then return false end
  if kind ~= 'terminal' then
    if upd_lt and not (r[UPDATED] < upd_lt) then return false end
    if upd_ge and not (r[UPDATED] >= upd_ge) then return false end
  end
  if min_att and (r[ATTEMPT] or 1) < min_att then return false end
  if needle ~= '' then
    return r[ERROR] and string.find(string.lower(r[ERROR]), needle, 1, true) ~= nil or false
  end
  return true
end

local out = {1, '', '', 0}
local examined, matched, last = 0, 0, nil
local stopped = false
for _, e in ipairs(ents) do
  if cap and ahead(cap, e) then break end  -- past what every index was read to
  if matched >= limit or examined >= budget then stopped = true; break end
  examined, last = examined + 1, e
  local raw = redis.call('GET', kf(e[2]))
  if raw and keep(raw, e[3]) then
    matched = matched + 1
    local k = #out
    out[k + 1], out[k + 2], out[k + 3], out[k + 4] = e[1], e[2], e[3], raw
  end
end
local frontier = stopped and last or cap
if frontier then out[1], out[2], out[3] = 0, frontier[1], frontier[2] end
out[4] = examined
return out
