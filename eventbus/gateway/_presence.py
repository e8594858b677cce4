"""Sockets' room membership in the Redis presence keys that ``get_room_members`` reads.

The layout is the bus's (:class:`eventbus._core.keyspace.Keyspace`; "Redis keys and
channels" in ``docs/wire-format.md``): per room a sorted set ``member -> expiry ms``
(server clock) and a hash ``member -> info JSON``, pruned by readers. A socket's member
is its user id, so one user is listed once however many sockets, tabs or gateway nodes
hold it.

Several nodes may hold the same user in the same room, so each node also keeps a
per-(room, user) reference set ``{p}presence:{R}:n:<user>`` (node id -> expiry ms, same
hash tag as the room's keys). A node that lets go of a user removes only its own
reference, and removes the member itself only when no live reference of another node
remains; otherwise the member's expiry becomes the latest remaining one. A node that
crashes stops refreshing: its users drop out ``presence_ttl`` seconds later unless
another node still refreshes them.

On one node, :class:`LocalRooms` counts sockets per (room, user), so only the first
socket entering and the last one leaving touch Redis; a heartbeat refreshes every
held (room, user) in one pipeline every ``heartbeat_interval``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import redis.asyncio as aioredis

from eventbus._core.keyspace import Keyspace
from eventbus._transports.redis.lua import SET_LUA

__all__ = ["LocalRooms", "PresenceStore"]

log = logging.getLogger("eventbus.gateway.presence")

_NOW = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
# KEYS zset, hash, refs; ARGV member, info, node, ttl ms, key ttl ms.
_ENTER_LUA = (
    _NOW
    + """
local exp = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[3], string.format('%d', exp), ARGV[3])
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < exp then
  redis.call('ZADD', KEYS[1], string.format('%d', exp), ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for i = 1, 3 do
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[5]) then redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
end
"""
)
# KEYS zset, hash, refs; ARGV member, node.
_EXIT_LUA = (
    _NOW
    + """
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%d', now))
local left = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
if #left == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1]); redis.call('HDEL', KEYS[2], ARGV[1]); redis.call('DEL', KEYS[3])
  return 1
end
redis.call('ZADD', KEYS[1], left[2], ARGV[1])
return 0
"""
)
# The bus's registry write, shared with the Redis transport.
_CLIENT_SET_LUA = SET_LUA


class LocalRooms:
    """This node's sockets by room and user: ``room -> user -> {sid}``."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, set[str]]] = {}

    def add(self, room: str, user: str, sid: str) -> bool:
        """Record ``sid`` of ``user`` in ``room``; True if it is the user's first socket there."""
        users = self._rooms.setdefault(room, {})
        sids = users.setdefault(user, set())
        first = not sids
        sids.add(sid)
        return first

    def discard(self, room: str, user: str, sid: str) -> bool:
        """Forget ``sid`` in ``room``; True if it was the user's last socket there."""
        users = self._rooms.get(room)
        if users is None or sid not in users.get(user, ()):
            return False
        sids = users[user]
        sids.discard(sid)
        if sids:
            return False
        del users[user]
        if not users:
            del self._rooms[room]
        return True

    def pairs(self) -> Iterator[tuple[str, str]]:
        """Every held (room, user)."""
        for room, users in list(self._rooms.items()):
            for user in list(users):
                yield room, user

    def rooms(self) -> dict[str, int]:
        """Room -> number of local sockets in it."""
        return {room: sum(len(s) for s in users.values()) for room, users in self._rooms.items()}

    def __len__(self) -> int:
        return len(self._rooms)


class PresenceStore:
    """Writes this node's (room, user) pairs and its client record to Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keyspace, *, node_id: str, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._node_id = node_id
        self._ttl_ms = max(1, int(ttl * 1000))
        self._key_ttl_ms = self._ttl_ms + max(1000, self._ttl_ms // 10)
        self._enter = redis.register_script(_ENTER_LUA)
        self._exit = redis.register_script(_EXIT_LUA)
        self._client_set = redis.register_script(_CLIENT_SET_LUA)

    def _room_keys(self, room: str, user: str) -> list[str]:
        zset, hash_ = self._keys.presence_keys(room)
        return [zset, hash_, f"{zset[:-2]}:n:{user}"]

    def _info(self, user: str) -> bytes:
        doc = {"kind": "socket", "user": user, "gateway": self._node_id}
        return json.dumps(doc, separators=(",", ":")).encode()

    async def enter(self, room: str, user: str) -> None:
        """Write ``user`` into ``room``'s members now (this node holds it)."""
        await self._enter(
            keys=self._room_keys(room, user),
            args=[user, self._info(user), self._node_id, self._ttl_ms, self._key_ttl_ms],
        )

    async def exit(self, room: str, user: str) -> None:
        """Let go of ``user`` in ``room``; it leaves unless another node holds it."""
        await self._exit(keys=self._room_keys(room, user), args=[user, self._node_id])

    async def refresh(self, pairs: Iterable[tuple[str, str]], *, chunk: int = 500) -> int:
        """Refresh every (room, user) in pipelines of ``chunk``; return how many."""
        count = 0
        batch: list[tuple[str, str]] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) >= chunk:
                count += await self._refresh_batch(batch)
                batch = []
        if batch:
            count += await self._refresh_batch(batch)
        return count

    async def _refresh_batch(self, batch: list[tuple[str, str]]) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for room, user in batch:
            await self._enter(
                keys=self._room_keys(room, user),
                args=[user, self._info(user), self._node_id, self._ttl_ms, self._key_ttl_ms],
                client=pipe,
            )
        await pipe.execute()
        return len(batch)

    async def exit_all(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Let go of every (room, user) at once (graceful shutdown)."""
        pipe = self._redis.pipeline(transaction=False)
        n = 0
        for room, user in pairs:
            await self._exit(
                keys=self._room_keys(room, user), args=[user, self._node_id], client=pipe
            )
            n += 1
        if n:
            await pipe.execute()

    async def register(self, info: dict[str, Any]) -> None:
        """Write or refresh this node's record in the clients registry (``eventbus stats``)."""
        zset, hash_ = self._keys.client_keys
        doc = json.dumps(info, separators=(",", ":"), default=str).encode()
        await self._client_set(
            keys=[zset, hash_], args=[self._node_id, doc, self._ttl_ms, self._key_ttl_ms]
        )

    async def unregister(self) -> None:
        """Remove this node's record from the clients registry."""
        zset, hash_ = self._keys.client_keys
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(zset, self._node_id)
        pipe.hdel(hash_, self._node_id)
        await pipe.execute()
