--[[ claim: lease up to `limit` due Flows of one type in any of the given states.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), type, limit, min_priority (only claim priorities >= it),
         then the lease request: worker id, lease_ms, payload_cap (bytes, 0 = no cap),
         value_max_bytes (0 = no cap), n_states, states..., n_values, names...
Reply    {now_ms, next_due_ms (-1: nothing scheduled), more (1: due work was left behind),
          then 8 fields per leased Flow, flat (a table per item cost Redis ~2,500 Ir to
          convert): id, state, payload, attempt, fencing, lease_token, deadline_ms, extra;
          extra = 0 when every one of these is unset, else
          {priority, parent_id, attempts_total, big (names of the payload/values left out
          for exceeding a cap), values (flat name, bytes list), crash_count, suspect (1: one
          more crash fails it under its policy's max_crashes)}
Order    expired leases of the type are released first (up to a quarter of the batch), then
         priority 2 before 1 before 0, earliest due first across the states.
Events   lease_released (cause expired), claimed
]]

local now = now_ms(ARGV[1])
local ftype, limit, min_prio = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local spec = lease_spec(5)
local states = spec.states
local lk = klease(ftype)

-- Expired leases first: a crashed holder's work should not wait behind fresh work.
local expired = redis.call('ZRANGEBYSCORE', lk, '-inf', now_str(), 'LIMIT', '0', str(math.max(1, math.floor(limit / 4))))
for _, id in ipairs(expired) do
  local r = load(id)
  if r and r[STATE] == 'running' then release(r, 'expired') end
end
if #expired > 0 then flush() end  -- the released Flows are due now: pick them below

-- The picked Flows as three parallel lists (a Lua table per candidate cost ~2,000 Ir).
local pid, pst, pprio, npicked = {}, {}, {}, 0
for prio = 2, min_prio, -1 do
  local need = limit - npicked
  if need <= 0 then break end
  if #states == 1 then  -- one due set is already in due order: no scores needed
    local st = states[1]
    local got = redis.call('ZRANGEBYSCORE', kdue(ftype, st, prio), '-inf', now_str(), 'LIMIT', '0', str(need))
    for j = 1, #got do
      npicked = npicked + 1
      pid[npicked], pst[npicked], pprio[npicked] = got[j], st, prio
    end
  else
    local cands = {}
    for _, st in ipairs(states) do
      local got = redis.call('ZRANGEBYSCORE', kdue(ftype, st, prio), '-inf', now_str(), 'WITHSCORES', 'LIMIT', '0', str(need))
      for j = 1, #got, 2 do cands[#cands + 1] = {got[j], tonumber(got[j + 1]), st} end
    end
    table.sort(cands, function(x, y) return x[2] < y[2] end)
    for j = 1, math.min(need, #cands) do
      npicked = npicked + 1
      pid[npicked], pst[npicked], pprio[npicked] = cands[j][1], cands[j][3], prio
    end
  end
end

local out = {now, -1, 0}
for i = 1, npicked do
  local id, st = pid[i], pst[i]
  zset(kdue(ftype, st, pprio[i]), id, false)
  local r = load(id)
  if r and r[STATE] == st then
    count(ftype, st, -1)
    local k = #out
    out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5], out[k + 6], out[k + 7],
      out[k + 8] = grant(r, st, spec)
  end
end
flush()  -- the picked Flows leave their due sets before the look below

-- Look for due work left behind (wake another worker) or the next due time (block until it).
local next_due = nil
for prio = 2, 0, -1 do
  for _, st in ipairs(states) do
    local first = redis.call('ZRANGE', kdue(ftype, st, prio), 0, 0, 'WITHSCORES')
    if #first > 0 then
      local score = tonumber(first[2])
      if score <= now then
        out[3] = 1
        wake(ftype, st)
      elseif not next_due or score < next_due then
        next_due = score
      end
    end
  end
end
local lease_first = redis.call('ZRANGE', lk, 0, 0, 'WITHSCORES')
if #lease_first > 0 then
  local score = tonumber(lease_first[2])
  if not next_due or score < next_due then next_due = score end
end
if next_due then out[2] = next_due end
flush()
return out
