--[[ cleanup: delete terminal Flows older than the retention, with history, values, children.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), retention_ms, limit (per type and status)
Reply    the number of Flows deleted
]]

local now = now_ms(ARGV[1])
local cutoff = now - tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local deleted = 0
for _, ftype in ipairs(redis.call('SMEMBERS', ktypes())) do
  for status, _ in pairs(TERMINAL) do
    local tk = kterminal(ftype, status)
    local ids = redis.call('ZRANGEBYSCORE', tk, '-inf', cutoff, 'LIMIT', 0, limit)
    for _, id in ipairs(ids) do
      redis.call('DEL', kflow(id), kpayload(id), khistory(id), kvalues(id), kchildren(id))
      count(ftype, status, -1)
      deleted = deleted + 1
    end
    if #ids > 0 then send('ZREM', tk, ids) end
  end
end
flush()
return deleted
