"""The connections of one Redis transport: the bus side's one Redis client factory.

:class:`RedisPools` makes every ``redis.ConnectionPool`` the transport uses (and the
one ``redis.Redis`` client per pool), each with every timeout, keepalive, handshake
and retry setting explicit, and all named with ``CLIENT SETNAME``:

* **command pools**, one per distinct deadline, for ``publish``, ``ping``, presence
  and the stream commands. A pool's socket timeout *is* the deadline, so a hung
  server holds a caller about the timeout it passed, also while a new connection
  shakes hands. :attr:`RedisPools.by_deadline` is read without a lock on the
  publish path.
* **read pools**, one per distinct block time, for ``XREADGROUP ... BLOCK``: the
  socket timeout is the block time plus ``socket_timeout``, so a hung server is still
  noticed, and a long block never borrows (or starves) a command pool.
* the listener's two small pools (its subscription connection, and the wake-up pool
  that publishes on the control channel), made through :meth:`RedisPools.make_pool`
  by :class:`~eventbus._transports.redis.listener.RedisListener`.

redis-py never retries nor reconnects by itself here (``Retry(NoBackoff(), 0,
supported_errors=())`` from :mod:`eventbus._transports.redis.compat`): errors reach
the caller at once, typed by :mod:`eventbus._transports.redis.errors`.

**The seam for other topologies.** Everything that talks to Redis (publishing, the
listener, presence, durable groups) gets its connections here and nowhere else, and
the listener only borrows pools, so the question "which server, which connection" has
one answer in one object:

* *Sentinel* (a master that moves) is a pools object whose pools point at the master
  resolved from the sentinels. On a switch it re-points them and calls
  :meth:`RedisPools.disconnect`: publishers reconnect to the new master on their next
  command, a blocked ``XREADGROUP`` ends with a connection error that the group
  reader retries with its backoff, and the listener sees its link fail and renews every
  subscription on a fresh connection, so the three move together. The bus does not
  change.
* *Cluster* (several nodes, sharded pub/sub) keeps one set of pools per node and
  answers "which pool for this channel / this stream" by the key's hash slot (the keys
  of one group or one room share a hash tag, so each script and each group exchange
  stays on one node). Its listener holds one PubSub per node that owns subscribed
  slots, each on that node's pools, and serves them all from one thread (the sink's
  ``on_message`` calls must not overlap); a slot map refresh re-points the pools and
  resubscribes what moved.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Final

import redis
from redis.connection import (
    ConnectionPool,
)

from eventbus._core.config import RedisConfig
from eventbus._errors import BusStateError, TransportConnectionError, ValidationError
from eventbus._transports.redis.compat import connection_options, lend
from eventbus._transports.redis.errors import map_error

__all__ = ["RedisPools"]

#: Distinct deadlines that get their own command pool; see :meth:`RedisPools.command_pool`.
_MAX_POOLS: Final = 8
#: Distinct block times that get a read pool of their own; see :meth:`RedisPools.read_pool`.
_MAX_READ_POOLS: Final = 4


class RedisPools:
    """Every connection pool of one Redis transport, made on first use.

    Example::

        pools = RedisPools(RedisConfig(port=6380), client_name="api:h:1:0")
        replies = pools.exchange([("XLEN", "s"), ("PING",)], timeout=2.0, what="look")
        pools.close()
        pools.disconnect()

    Args:
        config: how to reach Redis.
        client_name: the ``CLIENT SETNAME`` of every connection (the bus's client id);
            characters Redis refuses there (spaces, anything outside ``!``..``~``)
            become ``_``.
    """

    def __init__(self, config: RedisConfig, *, client_name: str) -> None:
        self.config = config
        self.client_name = re.sub(r"[^!-~]", "_", client_name)
        #: Command pools by deadline: read without a lock on the hot path, replaced
        #: (never mutated) under the lock, emptied by :meth:`close`.
        self.by_deadline: dict[float, ConnectionPool] = {}
        self._clients: dict[float, redis.Redis] = {}
        self._read_pools: dict[float, ConnectionPool] = {}
        self._made: list[ConnectionPool] = []
        self._lock = threading.Lock()
        self._closed = False
        #: How many times :meth:`disconnect` ran: a read that fails in redis-py's buffer
        #: (``OSError``, ``ValueError``) while this changed lost its connection to it.
        self.generation = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (no pool is lent any more)."""
        return self._closed

    def make_pool(self, socket_timeout: float, max_connections: int) -> ConnectionPool:
        """A new pool whose every timeout, keepalive and retry setting is explicit;
        :meth:`disconnect` closes it with the others."""
        kwargs = connection_options(
            self.config, client_name=self.client_name, socket_timeout=socket_timeout
        )
        pool = ConnectionPool(max_connections=max_connections, **kwargs)
        self._made.append(pool)
        return pool

    def command_pool(self, timeout: float) -> ConnectionPool:
        """The command pool whose socket timeout is ``timeout`` (created on first use).

        Past ``_MAX_POOLS`` distinct values, a new deadline borrows the pool of the
        nearest shorter one, so the deadline still holds.

        Raises:
            BusStateError: the pools are closed (the transport stopped).
            ValidationError: ``timeout`` is not a number > 0.
        """
        with self._lock:
            if self._closed:
                raise BusStateError("the Redis transport is stopped")
            pool = self.by_deadline.get(timeout)
            if pool is not None:
                return pool
            if not isinstance(timeout, int | float) or not timeout > 0:
                raise ValidationError(f"timeout must be a number > 0, got {timeout!r}")
            shorter = [t for t in self.by_deadline if t <= timeout]
            if len(self.by_deadline) >= _MAX_POOLS and shorter:
                return self.by_deadline[max(shorter)]
            pool = self.make_pool(timeout, self.config.max_connections)
            pools, clients = dict(self.by_deadline), dict(self._clients)
            pools[timeout] = pool
            clients[timeout] = redis.Redis(connection_pool=pool)
            self._clients, self.by_deadline = clients, pools
            return pool

    def command_client(self, timeout: float) -> redis.Redis:
        """A ``redis.Redis`` on the command pool of ``timeout`` (see :meth:`command_pool`)."""
        client = self._clients.get(timeout)
        if client is None:
            pool = self.command_pool(timeout)
            client = self._clients.get(timeout)
            if client is None:  # borrowed a shorter deadline's pool
                client = redis.Redis(connection_pool=pool)
        return client

    def read_pool(self, block: float) -> tuple[ConnectionPool, float]:
        """The read pool for a ``block``-second read, and its socket timeout.

        Past ``_MAX_READ_POOLS`` block times, a read borrows the pool of the nearest
        longer one (a longer socket timeout only notices a hung server later).

        Raises:
            BusStateError: the pools are closed (the transport stopped).
            ValidationError: ``block`` is not a number >= 0.
        """
        if not isinstance(block, int | float) or not block >= 0:
            raise ValidationError(f"block must be a number >= 0, got {block!r}")
        socket_timeout = block + self.config.socket_timeout
        pool = self._read_pools.get(socket_timeout)
        if pool is not None:
            return pool, socket_timeout
        with self._lock:
            if self._closed:
                raise BusStateError("the Redis transport is stopped")
            pool = self._read_pools.get(socket_timeout)
            if pool is not None:
                return pool, socket_timeout
            longer = [t for t in self._read_pools if t >= socket_timeout]
            if len(self._read_pools) >= _MAX_READ_POOLS and longer:
                return self._read_pools[min(longer)], min(longer)
            pool = self.make_pool(socket_timeout, self.config.max_connections)
            self._read_pools = {**self._read_pools, socket_timeout: pool}
            return pool, socket_timeout

    def exchange(
        self,
        commands: Sequence[tuple[Any, ...]],
        timeout: float,
        what: str,
        *,
        publish: bool = False,
    ) -> list[Any]:
        """Send ``commands`` in one round trip on a connection of deadline ``timeout``.

        Returns every raw reply in order (no redis-py response callbacks); a command
        Redis refused has its :class:`redis.ResponseError` in its place (the others
        were carried out).

        Raises:
            PublishTimeoutError: with ``publish``, no answer within ``timeout``.
            TransportError: no answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
            BusStateError: the pools are closed.
        """
        pool = self.by_deadline.get(timeout)
        if pool is None:
            pool = self.command_pool(timeout)
        replies: list[Any] = []
        try:
            conn: Any = lend(pool)  # redis-py's Connection is untyped
            try:
                conn.send_packed_command(conn.pack_commands(commands))
                for _ in commands:
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:  # read the other replies all the same
                        replies.append(exc)
            finally:
                pool.release(conn)
        except redis.RedisError as exc:
            raise map_error(exc, what, timeout, publish=publish) from exc
        return replies

    def close(self) -> None:
        """Lend no pool from now on (callers get :class:`~eventbus.BusStateError`).

        Connections stay open until :meth:`disconnect`, so that threads still using
        them (the listener, a blocked read) can be stopped first.
        """
        with self._lock:
            self._closed = True
            self.by_deadline, self._clients, self._read_pools = {}, {}, {}

    def severed(self, generation: int, what: str) -> TransportConnectionError | None:
        """The error for a command that failed outside redis-py's own errors (an
        ``OSError`` or ``ValueError`` in its buffer, as redis-py 5.0 raises when a socket
        is closed under a read), if :meth:`close` or :meth:`disconnect` closed it: the
        command began when :attr:`generation` was ``generation``. None otherwise: then
        the failure is a bug, for the caller to re-raise.
        """
        if self._closed:
            return TransportConnectionError(f"{what}: the Redis transport stopped")
        if self.generation != generation:
            return TransportConnectionError(
                f"{what}: the connection was closed under the command (pools disconnected)"
            )
        return None

    def disconnect(self) -> None:
        """Close every connection of every pool made so far, in use or idle.

        A command in flight on one of them (a blocked ``XREADGROUP``, the listener's
        read) fails with a connection error. Pools that are not closed open new
        connections on their next use.
        """
        with self._lock:
            self.generation += 1
            made = list(self._made)
        for pool in made:
            pool.disconnect()
