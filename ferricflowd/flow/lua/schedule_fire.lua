--[[ schedule_fire: fire schedules' occurrences, each creating its target Flow (one partition).

A schedule (sc:<name>, a hash; see schedule_admin.lua) lives in the partition of its name and
its Flows are created with the name as partition_key, so a fire and its Flow are one call.
The Flow of the occurrence due at D is `<prefix>:<D>`: a replayed or concurrent fire of the
same occurrence finds it and creates nothing ('dup'). The caller computes the occurrences
(cron, in Python) and this script applies them only if the schedule still expects them.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV[1]  now_ms override ('' = store TIME)
ARGV[2]  mode: 'due' or 'run'
 'due'   ARGV[3] n, then n items of 8: name, expect_due, tdigest, fire_due ('' = none),
         catchup ('1' = a late occurrence fired as the catch-up), run_at_ms (the Flow's due
         time: fire_due + jitter), skipped (missed occurrences to count), next_due ('' = the
         schedule is done). Applied only when the schedule's next due is expect_due and its
         timing digest is tdigest. A buffered occurrence (overlap buffer_one) whose previous
         Flow is now terminal fires first.
 'run'   ARGV[3] name, ARGV[4] how ('trigger': overlap applies; 'backfill': it does not),
         ARGV[5] n, then n due_ms ('' = now). The next due time does not change.
Reply    {now_ms, events of item 1, events of item 2, ...}; an item's events are flat
         triples outcome, due_ms, detail (a Flow id, a count, or ''). Outcomes: fired,
         catchup, triggered, backfilled, dup (its Flow exists), buffered, overlap (skipped:
         the previous Flow is not terminal), missed (detail: how many were skipped),
         cancelled (cancel_other; detail: the cancelled Flow), stale (another fire or an
         update came first), gone (no such schedule), paused, early (fire_due is ahead of
         the store's clock)
Errors   ERR flow schedule not found ('run')
Events   created (the target Flows); cancelled (cancel_other)
]]

local now = now_ms(ARGV[1])
local HIST_CAP = 100
local BUFFER_RECHECK_MS = 1000  -- a buffered occurrence is looked at again this often
local FIELDS = {'tdigest', 'next', 'paused', 'type', 'state', 'payload', 'prio', 'values',
                'prefix', 'overlap', 'last_id', 'buffered', 'buffered_run', 'digest'}

local function read(name)
  local got = redis.call('HMGET', kschedule(name), unpack(FIELDS))
  if not got[1] then return nil end
  local s = {name = name, key = kschedule(name), events = {}, hist = {}, fired = 0,
             skipped = 0}
  for i, f in ipairs(FIELDS) do s[f] = got[i] or '' end
  return s
end

local function note(s, outcome, due, detail)
  local ev = s.events
  ev[#ev + 1], ev[#ev + 2], ev[#ev + 3] = outcome, due, detail
  s.hist[#s.hist + 1] = cmsgpack.pack({now, tonumber(due) or 0, outcome, detail})
end

-- The previous Flow of the schedule when it is not terminal yet (overlap), else nil.
local function running_prev(s)
  if s.last_id == '' then return nil end
  local p = load(s.last_id)
  if p and not TERMINAL[p[STATE]] then return p end
  return nil
end

-- Create the Flow of the occurrence due at `due` (ms), due itself at run_at; 'dup' when the
-- occurrence already has its Flow.
local function make_flow(s, due, run_at)
  local id = s.prefix .. ':' .. str(due)
  if load(id) then return 'dup', id end
  local r = new_record(id)
  touch(r)
  r[TYPE], r[ATTEMPT], r[CREATED], r[DIGEST] = s.type, 1, now, s.digest
  if s.prio ~= '0' and s.prio ~= '' then put(r, PRIO, s.prio) end
  put(r, PKEY, s.name)
  put(r, CORR, s.name)
  put_values(id, s.values, true)
  set_payload(r, s.payload)
  rest(r, s.state, run_at, str(run_at))
  event(r, EV_CREATED, s.state, run_at)
  return 'ok', id
end

-- Fire one occurrence with the schedule's overlap policy (none for a backfill).
local function occur(s, due, run_at, how)
  if how ~= 'backfilled' then
    local prev = running_prev(s)
    if prev and s.overlap == 'skip' then
      s.skipped = s.skipped + 1
      return note(s, 'overlap', due, prev[ID])
    elseif prev and s.overlap == 'buffer_one' then
      if s.buffered ~= '' then
        s.skipped = s.skipped + 1
        return note(s, 'overlap', due, prev[ID])
      end
      s.buffered, s.buffered_run = str(due), str(run_at)
      return note(s, 'buffered', due, prev[ID])
    elseif prev and s.overlap == 'cancel_other' then
      cancel_flow(prev, 'schedule ' .. s.name .. ': overlapped by its occurrence ' .. str(due))
      note(s, 'cancelled', due, prev[ID])
    end
  end
  local st, id = make_flow(s, due, run_at)
  if how ~= 'backfilled' then s.last_id = id end
  if st == 'dup' then return note(s, 'dup', due, id) end
  s.fired = s.fired + 1
  note(s, how, due, id)
end

-- A buffered occurrence fires once the Flow it waited for is terminal.
local function release_buffered(s)
  if s.buffered == '' or running_prev(s) then return end
  local due, run_at = tonumber(s.buffered), tonumber(s.buffered_run)
  s.buffered, s.buffered_run = '', ''
  occur(s, due, run_at, 'fired')
end

local function save(s, fields)
  local args = {'last_id', s.last_id, 'buffered', s.buffered, 'buffered_run', s.buffered_run,
                'updated', now_str()}
  for k, v in pairs(fields or EMPTY) do args[#args + 1] = k; args[#args + 1] = v end
  redis.call('HSET', s.key, unpack(args))
  if s.fired > 0 then redis.call('HINCRBY', s.key, 'fired', s.fired) end
  if s.skipped > 0 then redis.call('HINCRBY', s.key, 'skipped', s.skipped) end
  if #s.hist > 0 then
    local hk = kschedule_fires(s.name)
    redis.call('LPUSH', hk, unpack(s.hist))
    redis.call('LTRIM', hk, 0, HIST_CAP - 1)
  end
  -- Its place in the queue: the next due time, sooner while an occurrence is buffered.
  local at = tonumber(s.next)
  if s.buffered ~= '' and (not at or at > now + BUFFER_RECHECK_MS) then
    at = now + BUFFER_RECHECK_MS
  end
  if s.paused == '1' or not at then redis.call('ZREM', kschedule_queue(), s.name)
  else redis.call('ZADD', kschedule_queue(), str(at), s.name) end
end

local function fire_due(a)
  local name, expect, fire = ARGV[a], ARGV[a + 1], ARGV[a + 3]
  local s = read(name)
  if not s then
    redis.call('ZREM', kschedule_queue(), name)
    return {'gone', expect, ''}
  end
  if s.tdigest ~= ARGV[a + 2] or s.next ~= expect then return {'stale', expect, ''} end
  if s.paused == '1' then
    redis.call('ZREM', kschedule_queue(), name)
    return {'paused', expect, ''}
  end
  if fire ~= '' and tonumber(fire) > now then return {'early', fire, ''} end
  release_buffered(s)
  local skipped = tonumber(ARGV[a + 6])
  if skipped > 0 then
    s.skipped = s.skipped + skipped
    note(s, 'missed', expect, str(skipped))
  end
  local fields = {next = ARGV[a + 7]}
  if fire ~= '' then
    occur(s, tonumber(fire), tonumber(ARGV[a + 5]), ARGV[a + 4] == '1' and 'catchup' or 'fired')
    fields.last_due, fields.last_fire = fire, now_str()
  end
  s.next = ARGV[a + 7]
  save(s, fields)
  return s.events
end

local out = {now}
if ARGV[2] == 'due' then
  for i = 0, tonumber(ARGV[3]) - 1 do out[#out + 1] = fire_due(4 + i * 8) end
else
  local s = read(ARGV[3])
  if not s then return redis.error_reply('ERR flow schedule not found') end
  local how = ARGV[4] == 'backfill' and 'backfilled' or 'triggered'
  for i = 1, tonumber(ARGV[5]) do
    local due = ARGV[5 + i] ~= '' and tonumber(ARGV[5 + i]) or now
    s.events = {}
    if i == 1 and how == 'triggered' then release_buffered(s) end
    occur(s, due, math.max(due, now), how)
    out[#out + 1] = s.events
  end
  save(s)
end
flush()
return out
