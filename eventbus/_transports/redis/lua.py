"""Lua scripts shared by everything that writes the presence and client records
(the Redis transport, the gateway's presence and its service namespace), so that each
reads what the others wrote: one source, byte for byte.

Pure data: the callers register them with their own Redis client.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MEMBERS_LUA", "PRUNE_LUA", "RECORDS_LUA", "SET_LUA"]

# KEYS zset, hash; ARGV member, info, ttl ms, key ttl ms. The expiry comes from the server's
# clock, and a key's TTL is only ever extended (a short member never cuts a long one's).
SET_LUA: Final = """
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now + ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 1, 2 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
"""
# Drops members whose expiry is before the server's now, from the zset and the hash.
PRUNE_LUA: Final = """
local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
for i = 1, #dead, 500 do
  local chunk = {unpack(dead, i, math.min(i + 499, #dead))}
  redis.call('ZREM', KEYS[1], unpack(chunk)); redis.call('HDEL', KEYS[2], unpack(chunk))
end
"""
MEMBERS_LUA: Final = PRUNE_LUA + "return redis.call('ZRANGE', KEYS[1], 0, -1)"
RECORDS_LUA: Final = (
    PRUNE_LUA
    + """
local live, out = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]; out[#out + 1] = live[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i])
end
return out
"""
)
