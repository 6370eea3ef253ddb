-- zhongtai: apply one absolute (person, minute) bucket to the person's profile hash.
-- KEYS[1]  profile hash key
-- ARGV     minute, views, carts, purchases, events, gmv_cents, first_seen, last_seen, last_purchase,
--          keep_minutes, keep_hours, keep_days, mode ('set' | 'del': the bucket no longer exists, e.g. its
--          anchor moved to another person on a merge or split)
-- The minute bucket is stored as it is (absolute, from Flink state); hour/day buckets and lifetime
-- totals move by the difference to the value stored before, so writing the same bucket again is a
-- no-op and a replayed older value followed by the newer one converges to the same hash.
local key = KEYS[1]
local minute = tonumber(ARGV[1])
local nv = {tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])}
local first, last, lastp = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local keep_m, keep_h, keep_d = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local del = ARGV[13] == 'del'

local cur_last = tonumber(redis.call('HGET', key, 'last_seen') or '0')
local ref_min = math.floor(math.max(cur_last, last) / 60000)
if minute < ref_min - keep_m then return 0 end  -- outside every window: nothing to do

local field = 'm:' .. minute
local new = table.concat({ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}, ',')
local old = redis.call('HGET', key, field)
if del then
  if not old then return 0 end
  nv = {0, 0, 0, 0, 0}
elseif old == new then
  return 0
end
local ov = {0, 0, 0, 0, 0, 0, 0, 0}
if old then
  local i = 1
  for x in string.gmatch(old, '([^,]+)') do
    if i <= 8 then ov[i] = tonumber(x) end
    i = i + 1
  end
end
if del then redis.call('HDEL', key, field) else redis.call('HSET', key, field, new) end
local hour = math.floor(minute / 60)
local day = math.floor(minute / 1440)
local d = {nv[1] - ov[1], nv[2] - ov[2], nv[3] - ov[3], nv[4] - ov[4], nv[5] - ov[5]}
if d[1] ~= 0 then redis.call('HINCRBY', key, 'hv:' .. hour, d[1]); redis.call('HINCRBY', key, 'views', d[1]) end
if d[2] ~= 0 then redis.call('HINCRBY', key, 'hc:' .. hour, d[2]); redis.call('HINCRBY', key, 'carts', d[2]) end
if d[3] ~= 0 then redis.call('HINCRBY', key, 'dp:' .. day, d[3]); redis.call('HINCRBY', key, 'purchases', d[3]) end
if d[4] ~= 0 then redis.call('HINCRBY', key, 'events', d[4]) end
if d[5] ~= 0 then redis.call('HINCRBY', key, 'dg:' .. day, d[5]); redis.call('HINCRBY', key, 'gmv_cents', d[5]) end

-- first/last seen and last purchase only move one way while buckets grow; a bucket that shrank or
-- vanished (a merge moved its anchor away, or a split) may have held the extreme: derive them again
-- from the minute buckets that are left (the rare path).
if del or (old and (first > ov[6] or last < ov[7] or lastp < ov[8])) then
  if tonumber(redis.call('HGET', key, 'events') or '0') <= 0 then
    redis.call('DEL', key)
    return 1
  end
  local f0, l0, p0 = 0, 0, 0
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'm:' then
      local j, vals = 1, {}
      for x in string.gmatch(all[i + 1], '([^,]+)') do vals[j] = tonumber(x); j = j + 1 end
      if f0 == 0 or vals[6] < f0 then f0 = vals[6] end
      if vals[7] > l0 then l0 = vals[7] end
      if vals[8] > p0 then p0 = vals[8] end
    end
  end
  redis.call('HSET', key, 'first_seen', f0, 'last_seen', l0)
  if p0 > 0 then redis.call('HSET', key, 'last_purchase', p0) else redis.call('HDEL', key, 'last_purchase') end
  return 1
end
local cur_first = tonumber(redis.call('HGET', key, 'first_seen') or '0')
if cur_first == 0 or first < cur_first then redis.call('HSET', key, 'first_seen', first) end
if last > cur_last then redis.call('HSET', key, 'last_seen', last) end
if lastp > 0 then
  local cur_lp = tonumber(redis.call('HGET', key, 'last_purchase') or '0')
  if lastp > cur_lp then redis.call('HSET', key, 'last_purchase', lastp) end
end

-- Once per day of event time: drop buckets that no window can reach any more.
local gc_day = tonumber(redis.call('HGET', key, 'gc_day') or '0')
local now_day = math.floor(ref_min / 1440)
if now_day > gc_day then
  redis.call('HSET', key, 'gc_day', now_day)
  local ref_hour = math.floor(ref_min / 60)
  local fields = redis.call('HKEYS', key)
  for _, f in ipairs(fields) do
    local kind, n = string.match(f, '^(%a+):(%d+)$')
    if kind then
      n = tonumber(n)
      if (kind == 'm' and n < ref_min - keep_m) or ((kind == 'hv' or kind == 'hc') and n < ref_hour - keep_h)
         or ((kind == 'dp' or kind == 'dg') and n < now_day - keep_d) then
        redis.call('HDEL', key, f)
      end
    end
  end
end
return 1
