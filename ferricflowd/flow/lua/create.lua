--[[ create: create Flows in one partition (the batch form; a single create is n = 1).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV[1]  now_ms override ('' = store TIME)
ARGV[2]  n, the number of items; then per item 7 fields:
         id, type, state, payload, priority, mode, digest
         where mode is '0' / '1' (not idempotent / idempotent) for a plain item, and '2' / '3'
         (the same) for one followed by 7 more fields: run_at_ms ('' = now), parent_id,
         parent_partition, partition_key, root_id, correlation_id, values (msgpack map
         name -> bytes, or ''). A plain item has them all empty: every argument costs the
         store ~800 Ir (parsed, made a Redis string, then a Lua string), so most items send 7.
Reply    array of n: 'ok' (created), 'dup' (idempotent repeat, nothing written), or an error
         string: 'ERR flow already exists', 'ERR flow idempotency conflict',
         'ERR flow wrong state' (running/terminal is not a create state)
Events   created
]]

local now = now_ms(ARGV[1])
local now_s = now_str()
local n = tonumber(ARGV[2])
local out = {}
local a = 3
for _ = 1, n do
  local id, ftype, state, mode, digest = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 5], ARGV[a + 6]
  local full, idempotent = mode == '2' or mode == '3', mode == '1' or mode == '3'
  local existing = load(id)
  if existing then
    if not idempotent then out[#out + 1] = 'ERR flow already exists'
    elseif existing[DIGEST] == digest then out[#out + 1] = 'dup'
    else out[#out + 1] = 'ERR flow idempotency conflict' end
  elseif state == 'running' or TERMINAL[state] then
    out[#out + 1] = 'ERR flow wrong state'
  else
    local r = new_record(id)
    touch(r)
    -- CORE fields assigned directly; zero counters and empty options are left out.
    r[TYPE], r[ATTEMPT], r[CREATED], r[DIGEST] = ftype, 1, now, digest
    if ARGV[a + 4] ~= '0' then put(r, PRIO, ARGV[a + 4]) end
    local due, due_s = now, now_s
    if full then
      if ARGV[a + 8] ~= '' then put(r, PARENT, ARGV[a + 8]) end
      if ARGV[a + 9] ~= '' then put(r, PP, ARGV[a + 9]) end
      if ARGV[a + 10] ~= '' then put(r, PKEY, ARGV[a + 10]) end
      if ARGV[a + 11] ~= '' then put(r, ROOT, ARGV[a + 11]) end
      if ARGV[a + 12] ~= '' then put(r, CORR, ARGV[a + 12]) end
      if ARGV[a + 7] ~= '' then due, due_s = tonumber(ARGV[a + 7]), ARGV[a + 7] end
      put_values(id, ARGV[a + 13], true)
    end
    set_payload(r, ARGV[a + 3])
    rest(r, state, due, due_s)
    event(r, EV_CREATED, state, due)
    out[#out + 1] = 'ok'
  end
  a = a + (full and 14 or 7)
end
flush()
return out
