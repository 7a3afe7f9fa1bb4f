--[[ lib/children.lua: terminal Flows and children groups.

finish() tells the Flow's parent (child_done), whose resolved group can fail it in turn
(settle_group, finish), and a failed or cancelled Flow cancels its children (cascade_cancel,
finish): these functions call each other, so they live together. Uses every include before
it: call.lua, keys.lua, record.lua, history.lua and lease.lua (rest, unrest).
]]

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
  local kk = kchildren(parent_id)
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
    redis.call('RPUSH', koutbox(), cmsgpack.pack({r[PP], r[PARENT], r[ID], status}))
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
  zset(kterminal(r[TYPE], status), r[ID], now_str())
  local ver = event(r, s, v1, v2, v3, v4)
  parent_hook(r, status)
  return ver
end

-- Cancel the unfinished children of `p`: inline in this partition (recursively), through the
-- outbox in others.
cascade_cancel = function(p, reason)
  local flat = redis.call('HGETALL', kchildren(p[ID]))
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
        redis.call('RPUSH', koutbox(), cmsgpack.pack({kpart, cid, p[ID], 'cancel'}))
      end
    end
  end
end

-- Cancel a Flow with `reason` in its history, and its unfinished children with it.
local function cancel_flow(r, reason)
  finish(r, 'cancelled', 'cancel', ERROR, reason, EV_CANCELLED, reason)
  cascade_cancel(r, 'parent cancelled')
end
