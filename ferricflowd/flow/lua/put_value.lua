--[[ put_value: store named values beside a Flow (write-once unless override).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), id, values (msgpack map name -> bytes), override ('1'/'0')
Reply    'ok' (the same bytes again: nothing written); error replies 'ERR flow not found',
         'ERR flow value <name> already exists with different digest; use OVERRIDE true'
Events   values_put {names}
]]

local now = now_ms(ARGV[1])
local r = load(ARGV[2])
if not r then return redis.error_reply('ERR flow not found') end
local changed = false  -- the same bytes again are a no-op: no write, no event
for name, data in pairs(cmsgpack.unpack(ARGV[3])) do
  if redis.call('HGET', kvalues(r[ID]), name) ~= data then changed = true end
end
if not changed then return 'ok' end
local err = put_values(r[ID], ARGV[3], ARGV[4] == '1')
if err then return redis.error_reply(err) end
local names = {}
for name, _ in pairs(cmsgpack.unpack(ARGV[3])) do names[#names + 1] = name end
table.sort(names)
event(r, EV_VALUES_PUT, table.concat(names, ','))
flush()
return 'ok'
