--[[ deliver: apply outbox notices from other partitions to Flows of this partition.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 3: target id, source id, kind
         (kind 'completed' | 'failed' | 'cancelled': a child of target finished;
          kind 'cancel': target's parent was cancelled or failed, so cancel target)
Reply    the number of items applied. Idempotent: a notice applied twice changes nothing.
Events   children_resolved / failed (parent), cancelled (child)
]]

local now = now_ms(ARGV[1])
local n = tonumber(ARGV[2])
local applied = 0
for i = 0, n - 1 do
  local a = 3 + i * 3
  local target, source, kind = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if kind == 'cancel' then
    local c = load(target)
    if c and not TERMINAL[c[STATE]] then
      finish(c, 'cancelled', 'cancel', ERROR, 'parent ended', EV_CANCELLED,
             'parent ' .. source .. ' ended')
      cascade_cancel(c, 'parent ended')
      applied = applied + 1
    end
  else
    child_done(target, source, kind)
    applied = applied + 1
  end
end
flush()
return applied
