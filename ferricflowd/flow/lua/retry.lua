--[[ retry: schedule running Flows again in their logical state, by the stored RetryPolicy.

KEYS[1]  partition prefix "{<ns>:<p>}:" (every key used derives from it; see lib/keys.lua)
ARGV     now_ms override ('' = TIME), n, then n items of 5: id, lease_token, fencing,
         error, run_at_ms ('' = the policy's backoff)
Reply    array of n: 'scheduled', 'exhausted', 'replay', 'ERR flow not found' or
         'ERR stale flow lease'
Policy   p:<type> field <state> or '*' (JSON; defaults in lib/grant.lua). Retry n (1-based) waits
         base, base*n or base*2^(n-1) ms, capped at max_ms, jittered by +-jitter_pct
         deterministically from the id and attempt. After max_retries the Flow goes to
         exhausted_to: 'failed' (terminal) or a state where it is due at once.
Events   retry {decision = scheduled | exhausted}
]]

local function backoff_ms(pol, id, n)
  local base = tonumber(pol.base_ms or 1000)
  local kind = pol.backoff or 'exponential'
  local delay = base
  if kind == 'none' then return 0
  elseif kind == 'linear' then delay = base * n
  elseif kind == 'exponential' then delay = base * (2 ^ (n - 1)) end
  delay = math.min(delay, tonumber(pol.max_ms or 30000))
  local pct = tonumber(pol.jitter_pct or 0)
  if pct > 0 then
    local unit = tonumber(string.sub(redis.sha1hex(id .. ':' .. n), 1, 8), 16) / 4294967295
    delay = delay * (1 + pct / 100 * (2 * unit - 1))
  end
  return math.floor(delay)
end

local now = now_ms(ARGV[1])
return each_leased(3, 5, 'retry', function(r, a)
  local id, err = r[ID], ARGV[a + 3]
  local state = r[RUN_STATE]
  local pol = policy(r[TYPE], state)
  local attempt = r[ATTEMPT] + 1
  local total = (r[ATTEMPTS] or 0) + 1
  if attempt - 1 <= tonumber(pol.max_retries or 3) then
    unrest(r)
    local due = now + backoff_ms(pol, id, attempt - 1)
    if ARGV[a + 4] ~= '' then due = tonumber(ARGV[a + 4]) end
    set(r, ATTEMPT, attempt, ATTEMPTS, total, ERROR, err, LO, 'retry')
    rest(r, state, due)
    event(r, EV_RETRY_SCHEDULED, 'scheduled', err, attempt, due)
    return 'scheduled'
  end
  local to = pol.exhausted_to or 'failed'
  if TERMINAL[to] then
    set(r, ATTEMPTS, total)
    finish(r, to, 'retry', ERROR, err, EV_RETRY_EXHAUSTED, 'exhausted', err, attempt, to)
    cascade_cancel(r, 'parent ' .. to)
  else
    unrest(r)
    set(r, ATTEMPT, 1, ATTEMPTS, total, ERROR, err, LO, 'retry')
    rest(r, to, now)
    event(r, EV_RETRY_EXHAUSTED, 'exhausted', err, attempt, to)
  end
  return 'exhausted'
end)
