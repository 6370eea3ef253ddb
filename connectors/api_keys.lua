-- One request for a token of an API key's bucket: operators.delivery.ratelimit.take, in one atomic step.
-- KEYS[1] the bucket hash {tokens, updated_ms}; ARGV: now_ms, per_s, burst, ttl_s.
-- A missing bucket starts full; a clock that steps back refills nothing (several API processes, several clocks).
-- Returns the wait in seconds as a string ("0" when a token was taken; Redis would truncate a Lua number).
local now = tonumber(ARGV[1])
local per_s = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'updated_ms')
local tokens, updated = burst, now
if h[1] then
  tokens = tonumber(h[1])
  updated = tonumber(h[2])
end
tokens = math.min(burst, tokens + math.max(0, now - updated) * per_s / 1000.0)
local wait = 0
if tokens >= 1.0 then
  tokens = tokens - 1.0
else
  wait = (1.0 - tokens) / per_s
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'updated_ms', string.format('%d', math.max(now, updated)))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return string.format('%.17g', wait)
