"""Room members and the client registry on Redis: :class:`RedisPresenceStore`.

Each record set is a sorted set (member -> expiry, in the server's milliseconds) and
a hash (member -> info document), written and pruned by the Lua scripts of
:mod:`eventbus._transports.redis.lua`, which the gateway runs too, so that each reads
what the others wrote. The layout is in docs/wire-format.md ("Redis keys and
channels"). Both keys of a set share a hash tag, so every script stays in one slot
of a Redis Cluster.
"""

from __future__ import annotations

import redis

from eventbus._transports.base import ClientRecord
from eventbus._transports.redis.errors import map_error
from eventbus._transports.redis.lua import MEMBERS_LUA, RECORDS_LUA, SET_LUA
from eventbus._transports.redis.pools import RedisPools

__all__ = ["RedisPresenceStore"]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class RedisPresenceStore:
    """The :class:`~eventbus._transports.base.PresenceStore` over Redis, on the command
    pools of :class:`~eventbus._transports.redis.pools.RedisPools`.

    Example::

        presence = RedisPresenceStore(pools)
        presence.presence_set(zset, hash_, "api:h:1:0", b"{}", ttl=30.0, timeout=2.0)
        presence.presence_members(zset, hash_, timeout=2.0)  # ["api:h:1:0"]

    Args:
        pools: where its connections come from; each call runs on the command pool of
            its own ``timeout``.
    """

    def __init__(self, pools: RedisPools) -> None:
        self._pools = pools
        # Each call passes client=<its deadline's client>; EVALSHA, loaded on NOSCRIPT.
        registrar = pools.command_client(pools.config.socket_timeout)
        self._set_script = registrar.register_script(SET_LUA)
        self._members_script = registrar.register_script(MEMBERS_LUA)
        self._records_script = registrar.register_script(RECORDS_LUA)

    def presence_set(
        self, zset_key: str, hash_key: str, member: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Add or refresh ``member`` for ``ttl`` seconds, with its ``info``, in one script.

        The expiry is the server's TIME plus ``ttl`` (client clocks may be skewed); both
        keys live a little longer than ``ttl``, so an abandoned room disappears.
        """
        ttl_ms = max(1, int(ttl * 1000))
        args: list[str | bytes | int] = [member, info, ttl_ms, ttl_ms + max(1000, ttl_ms // 10)]
        client = self._pools.command_client(timeout)
        try:
            self._set_script(keys=[zset_key, hash_key], args=args, client=client)
        except redis.RedisError as exc:
            raise map_error(exc, f"register {member!r} in {zset_key!r}", timeout) from exc

    def presence_remove(self, zset_key: str, hash_key: str, member: str, timeout: float) -> None:
        """Remove ``member`` now (ZREM and HDEL in one MULTI)."""
        pipe = self._pools.command_client(timeout).pipeline(transaction=True)
        pipe.zrem(zset_key, member)
        pipe.hdel(hash_key, member)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise map_error(exc, f"remove {member!r} from {zset_key!r}", timeout) from exc

    def presence_members(self, zset_key: str, hash_key: str, timeout: float) -> list[str]:
        """Live members, sorted; expired ones (by the server clock) pruned first."""
        client = self._pools.command_client(timeout)
        try:
            raw = self._members_script(keys=[zset_key, hash_key], client=client)
        except redis.RedisError as exc:
            raise map_error(exc, f"members of {zset_key!r}", timeout) from exc
        return sorted(_decode(m) for m in raw)

    def client_set(
        self, zset_key: str, hash_key: str, client_id: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Register or refresh a live bus for ``ttl`` seconds; see :meth:`presence_set`."""
        self.presence_set(zset_key, hash_key, client_id, info, ttl, timeout)

    def client_remove(self, zset_key: str, hash_key: str, client_id: str, timeout: float) -> None:
        """Remove a bus's registration now."""
        self.presence_remove(zset_key, hash_key, client_id, timeout)

    def client_list(self, zset_key: str, hash_key: str, timeout: float) -> list[ClientRecord]:
        """Every live registered bus, sorted by id; expired ones pruned first."""
        client = self._pools.command_client(timeout)
        try:
            raw = self._records_script(keys=[zset_key, hash_key], client=client)
        except redis.RedisError as exc:
            raise map_error(exc, f"clients in {zset_key!r}", timeout) from exc
        records = [
            ClientRecord(
                client_id=_decode(raw[i]),
                info=raw[i + 2] or b"",
                expires_at=int(raw[i + 1]) / 1000,
            )
            for i in range(0, len(raw), 3)
        ]
        return sorted(records, key=lambda r: r.client_id)
