--[[ create: create Flows in one partition (the batch form; a single create is n = 1).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see _lib.lua)
ARGV[1]  now_ms override ('' = store TIME)
ARGV[2]  n, the number of items; then 14 fields per item:
         id, type, state, payload, priority, run_at_ms ('' = now), parent_id, parent_partition,
         partition_key, idempotent ('1'/'0'), digest, root_id, correlation_id,
         values (msgpack map name -> bytes, or '')
Reply    array of n: 'ok' (created), 'dup' (idempotent repeat, nothing written), or an error
         string: 'ERR flow already exists', 'ERR flow idempotency conflict',
         'ERR flow wrong state' (running/terminal is not a create state)
Events   created
]]

local now = now_ms(ARGV[1])
local now_s = now_str()
local n = tonumber(ARGV[2])
local out = {}
for i = 0, n - 1 do
  local a = 3 + i * 14
  local id, ftype, state, digest = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 10]
  local existing = load(id)
  if existing then
    if ARGV[a + 9] ~= '1' then out[#out + 1] = 'ERR flow already exists'
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
    if ARGV[a + 6] ~= '' then put(r, PARENT, ARGV[a + 6]) end
    if ARGV[a + 7] ~= '' then put(r, PP, ARGV[a + 7]) end
    if ARGV[a + 8] ~= '' then put(r, PKEY, ARGV[a + 8]) end
    if ARGV[a + 11] ~= '' then put(r, ROOT, ARGV[a + 11]) end
    if ARGV[a + 12] ~= '' then put(r, CORR, ARGV[a + 12]) end
    set_payload(r, ARGV[a + 3])
    put_values(id, ARGV[a + 13], true)
    local due, due_s = now, now_s
    if ARGV[a + 5] ~= '' then due, due_s = tonumber(ARGV[a + 5]), ARGV[a + 5] end
    rest(r, state, due, due_s)
    event(r, EV_CREATED, state, due)
    out[#out + 1] = 'ok'
  end
end
flush()
return out
