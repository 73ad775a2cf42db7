"""The Lua scripts of the Redis store (:mod:`tfrs_recsys.serving.stores.redis_store`): reads and writes
that must see one version, run atomically on the server.
"""

# ARGV: ns, user, how many hot items to add (the fallback's refresh; 0: none).
USER_STATE = """
local ns, user = ARGV[1], ARGV[2]
local hist = redis.call('LRANGE', ns .. ':hist:' .. user, 0, -1)
local live = redis.call('GET', ns .. ':live')
if not live then return {false, hist} end
local p = ns .. ':v' .. live .. ':'
local recall = false
if redis.call('SISMEMBER', p .. 'dirty', user) == 0 then
  recall = redis.call('GET', p .. 'recall:' .. user)
end
local hot = {}
if tonumber(ARGV[3]) > 0 then
  hot = redis.call('ZRANGE', p .. 'hot', 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
end
return {live, hist, recall, redis.call('HGET', p .. 'users', user), hot}
"""
HOT = """
local live = redis.call('GET', ARGV[1] .. ':live')
if not live then return {false, {}} end
return {live, redis.call('ZRANGE', ARGV[1] .. ':v' .. live .. ':hot', 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')}
"""
# Keeps an item's hot score only from the batch that made its latest update (KEYS: rev hash, hot zset).
RESCORE = """
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  end
end
"""
# Histories for users without one (ARGV: ns, then user, count, items... per user).
SEED = """
local i, n = 2, 0
while i <= #ARGV do
  local key, count = ARGV[1] .. ':hist:' .. ARGV[i], tonumber(ARGV[i + 1])
  if count > 0 and redis.call('EXISTS', key) == 0 then
    redis.call('RPUSH', key, unpack(ARGV, i + 2, i + 1 + count))
    n = n + 1
  end
  i = i + 2 + count
end
return n
"""
