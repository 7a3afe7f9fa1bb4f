--[[ reclaim: release leases so their Flows are due again at once in their logical state.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), mode ('expired' | 'worker'), type (mode expired) or
         worker id (mode worker), cause (text for the history), limit, then (mode worker)
         n ('' = the worker's handler table is unknown) and n pairs: sha1 hex of an id that
         was running in a handler at the death, '1' (blamed) or '0' (not blamed)
Reply    {released, failed}. Mode worker counts a crash (crash_count + 1) on each blamed Flow,
         or on every Flow when the table is unknown; one that reaches its policy's
         max_crashes fails with 'crashed worker <n> times'. Flows the table shows were not
         running in a handler are released without blame ('<cause>, not started').
Events   lease_released {cause}, or failed (poison pill)
]]

local now = now_ms(ARGV[1])
local mode, subject, cause, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local released, failed = 0, 0
if mode == 'expired' then
  local ids = redis.call('ZRANGEBYSCORE', klease(subject), '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    local r = load(id)
    if r and r[STATE] == 'running' then
      release(r, 'expired')
      released = released + 1
    end
  end
else
  local wk = kworker(subject)
  local ran = nil  -- sha1 hex of id -> '1' blamed, '0' interrupted but not blamed
  if ARGV[6] ~= '' then
    ran = {}
    for i = 7, 6 + 2 * tonumber(ARGV[6]), 2 do ran[ARGV[i]] = ARGV[i + 1] end
  end
  for _, id in ipairs(redis.call('SMEMBERS', wk)) do
    local r = load(id)
    if r and r[STATE] == 'running' and r[OWNER] == subject then
      local blame = (not ran) and '1' or ran[redis.sha1hex(id)]
      if blame ~= '1' then
        release(r, cause .. (blame and ', handler interrupted, not blamed' or ', not started'))
        released = released + 1
      else
        local crashes = (r[CRASHES] or 0) + 1
        set(r, CRASHES, crashes)
        local max = tonumber(policy(r[TYPE], r[RUN_STATE]).max_crashes or 3)
        if max > 0 and crashes >= max then
          local err = 'crashed worker ' .. crashes .. ' times (' .. cause .. ')'
          finish(r, 'failed', 'fail', ERROR, err, EV_FAILED_CAUSE, err, cause)
          cascade_cancel(r, 'parent failed')
          failed = failed + 1
        else
          release(r, cause)
          released = released + 1
        end
      end
    end
  end
  redis.call('DEL', wk)
end
flush()
return {released, failed}
