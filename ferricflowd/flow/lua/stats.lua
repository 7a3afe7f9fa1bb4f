--[[ stats: exact counts for one type in this partition (read-only).

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), type
Reply    {now_ms, running, counts (flat state, n list), per_state...} where per_state =
         {state, due_now, oldest_due_ms or -1}
]]

local now = now_ms(ARGV[1])
local ftype = ARGV[2]
local out = {now, redis.call('ZCARD', klease(ftype)), redis.call('HGETALL', kcounts(ftype))}
for _, st in ipairs(redis.call('SMEMBERS', kstates(ftype))) do
  if not TERMINAL[st] then
    local due, oldest = 0, -1
    for prio = 0, 2 do
      local key = kdue(ftype, st, prio)
      due = due + redis.call('ZCOUNT', key, '-inf', now)
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if #first > 0 and tonumber(first[2]) <= now then
        local score = tonumber(first[2])
        if oldest < 0 or score < oldest then oldest = score end
      end
    end
    out[#out + 1] = {st, due, oldest}
  end
end
return out
