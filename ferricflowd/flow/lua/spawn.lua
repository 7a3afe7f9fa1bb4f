--[[ spawn: create a group of children for a running parent and record the group on it.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), parent id, lease_token, fencing, group name,
         wait_state, wait ('all' | 'any'), on_child_failed ('fail_parent' | 'ignore'),
         group digest, this partition's index, n, then n items of 9: id, type, state,
         payload, priority, partition, partition_key, values (msgpack or ''), create digest
Reply    {'ok' | 'dup', item...}: item 'ok' (created here), 'exists' (already this parent's
         child), 'remote' (another partition: the client creates it with create.lua).
         Error replies: 'ERR flow not found', 'ERR stale flow lease', 'ERR flow already
         exists' (a child id taken by another Flow; nothing written), 'ERR flow wrong state'
         (another group is still open), 'ERR flow idempotency conflict' (same group name,
         other children)
Effect   the parent keeps its lease; its next transition parks it until the group resolves.
Events   created (each local child), children_spawned (parent)
]]

local now = now_ms(ARGV[1])
local pid, group, digest, part = ARGV[2], ARGV[5], ARGV[9], ARGV[10]
local n = tonumber(ARGV[11])
local p = load(pid)
local st = check_lease(p, ARGV[3], ARGV[4], '\0')
if st ~= 'live' then return redis.error_reply(st) end
if p[GRP_OPEN] and p[GRP_NAME] == group then
  if p[GRP_DIGEST] == digest then return {'dup'} end
  return redis.error_reply('ERR flow idempotency conflict')
end
if p[GRP_OPEN] and (p[GRP_RES] or '') == '' then return redis.error_reply('ERR flow wrong state') end
for i = 0, n - 1 do
  local a = 12 + i * 9
  if ARGV[a + 5] == part then
    local c = load(ARGV[a])
    if c and c[PARENT] ~= pid then return redis.error_reply('ERR flow already exists') end
  end
end
local out = {'ok'}
local kk = kchildren(pid)
local root = p[ROOT] or pid
for i = 0, n - 1 do
  local a = 12 + i * 9
  local cid, cpart = ARGV[a], ARGV[a + 5]
  redis.call('HSET', kk, cid, 'pending|' .. cpart .. '|' .. group)
  if cpart ~= part then
    out[#out + 1] = 'remote'
  elseif load(cid) then
    out[#out + 1] = 'exists'
  else
    local c = new_record(cid)
    -- A child without its own key is addressed with its parent's routing key.
    local ckey = ARGV[a + 6]
    if ckey == '' then ckey = p[PKEY] or pid end
    set(c, TYPE, ARGV[a + 1], PRIO, ARGV[a + 4], ATTEMPT, 1, CREATED, now,
        DIGEST, ARGV[a + 8], PARENT, pid, PP, part, ROOT, root, PKEY, ckey,
        CORR, p[CORR] or false)
    set_payload(c, ARGV[a + 3])
    put_values(cid, ARGV[a + 7], true)
    rest(c, ARGV[a + 2], now)
    event(c, EV_CREATED_CHILD, ARGV[a + 2], pid)
    out[#out + 1] = 'ok'
  end
end
set(p, GRP_OPEN, 1, GRP_NAME, group, GRP_STATE, ARGV[6], GRP_WAIT, ARGV[7],
    GRP_FAIL, ARGV[8], GRP_N, n, GRP_DONE, 0, GRP_OK, 0, GRP_RES, n == 0 and 'ok' or '',
    GRP_DIGEST, digest, GRP_ERR, false, GRP_PARKED, false)
event(p, EV_SPAWNED, group, n, ARGV[7], ARGV[6])
flush()
return out
