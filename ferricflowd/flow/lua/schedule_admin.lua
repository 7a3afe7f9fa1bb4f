--[[ schedule_admin: create, update, pause, resume or delete one schedule.

A schedule is a hash sc:<name> in the partition of its name: its spec (type, state, payload,
prio, values, prefix, overlap, kind, cron, every, at, tz, start, end, jitter, catchup, as
flow/schedules.py writes them), digest (the whole spec), tdigest (its timing), origin ('api'
or 'config'), decl_paused (the paused value its last put declared), and its state: next
(the next occurrence, ms; '' = done), paused ('1' or ''), last_due, last_id (the newest
Flow), last_fire, buffered and buffered_run (an occurrence waiting under buffer_one), fired,
skipped, created, updated. Also per partition: sq (zset: active schedules by the time to look
at them next), sn (hash: name -> origin), and sh:<name> (list: recent fires, newest first).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV[1]  now_ms override ('' = store TIME)
ARGV[2]  op: 'put', 'pause', 'resume' or 'delete'
ARGV[3]  name
 put     ARGV[4] mode ('put' = upsert, 'create', 'update'), ARGV[5] origin, ARGV[6] digest,
         ARGV[7] tdigest, ARGV[8] first_due ('' = none; used when new or re-timed),
         ARGV[9] declared paused ('1'/'0': applied when new or when it changed), ARGV[10] nf,
         then nf spec field, value pairs
         Reply 'created', 'updated' or 'unchanged' (same digest and origin: nothing written)
 pause   Reply 'ok' or 'already'
 resume  ARGV[4] tdigest, ARGV[5] next_due ('' = keep); Reply 'ok', 'already' or 'stale'
         (the timing changed since next_due was computed)
 delete  ARGV[4] origin guard ('' = any; 'config' = only a config schedule)
         Reply 'ok', 'gone' (no such schedule) or 'kept' (the guard did not match)
Errors   ERR flow schedule not found (put 'update', pause, resume),
         ERR flow schedule already exists (put 'create' of a different spec)
]]

local now = now_str()
local name = ARGV[3]
local key = T .. 'sc:' .. name
local op = ARGV[2]

local function remember(what)
  local hk = T .. 'sh:' .. name
  redis.call('LPUSH', hk, cmsgpack.pack({now_ms(), 0, what, ''}))
  redis.call('LTRIM', hk, 0, 99)
end

local function requeue(paused, nxt)
  if paused == '1' or nxt == '' then redis.call('ZREM', T .. 'sq', name)
  else redis.call('ZADD', T .. 'sq', nxt, name) end
end

if op == 'put' then
  local mode, origin, digest, tdigest = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local cur = redis.call('HMGET', key, 'digest', 'origin', 'tdigest', 'decl_paused', 'paused',
                         'next')
  local created = not cur[1]
  if created and mode == 'update' then return redis.error_reply('ERR flow schedule not found') end
  if not created and cur[1] == digest and (cur[2] == origin or mode == 'create') then
    return 'unchanged'
  end
  if not created and mode == 'create' then
    return redis.error_reply('ERR flow schedule already exists')
  end
  local args = {}
  for i = 1, tonumber(ARGV[10]) * 2 do args[i] = ARGV[10 + i] end
  local paused, nxt = cur[5] or '', cur[6] or ''
  if created or cur[4] ~= ARGV[9] then paused = ARGV[9] == '1' and '1' or '' end
  if created or cur[3] ~= tdigest then nxt = ARGV[8] end
  for _, v in ipairs({'digest', digest, 'tdigest', tdigest, 'origin', origin,
                      'decl_paused', ARGV[9], 'paused', paused, 'next', nxt, 'updated', now}) do
    args[#args + 1] = v
  end
  if created then
    for _, v in ipairs({'created', now, 'fired', '0', 'skipped', '0', 'last_id', '',
                        'last_due', '', 'buffered', '', 'buffered_run', ''}) do
      args[#args + 1] = v
    end
  end
  redis.call('HSET', key, unpack(args))
  redis.call('HSET', T .. 'sn', name, origin)
  requeue(paused, nxt)
  remember(created and 'created' or 'updated')
  return created and 'created' or 'updated'
end

local cur = redis.call('HMGET', key, 'paused', 'next', 'tdigest', 'origin')
if op == 'delete' then
  if not cur[4] then return 'gone' end
  if ARGV[4] ~= '' and cur[4] ~= ARGV[4] then return 'kept' end
  redis.call('DEL', key, T .. 'sh:' .. name)
  redis.call('ZREM', T .. 'sq', name)
  redis.call('HDEL', T .. 'sn', name)
  return 'ok'
end
if not cur[4] then return redis.error_reply('ERR flow schedule not found') end
if op == 'pause' then
  if cur[1] == '1' then return 'already' end
  redis.call('HSET', key, 'paused', '1', 'updated', now)
  requeue('1', cur[2])
  remember('paused')
  return 'ok'
end
-- resume
if cur[1] ~= '1' then return 'already' end
if cur[3] ~= ARGV[4] then return 'stale' end
local nxt = cur[2]
if ARGV[5] ~= '' and nxt ~= '' then nxt = ARGV[5] end
redis.call('HSET', key, 'paused', '', 'next', nxt, 'updated', now)
requeue('', nxt)
remember('resumed')
return 'ok'
