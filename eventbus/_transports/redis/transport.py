"""The Redis transport: ``redis://``, ``rediss://``, ``unix://``.

:class:`RedisTransport` is composed of four parts, each in its own module:

* :class:`~eventbus._transports.redis.pools.RedisPools`: every connection (command
  pools per deadline, read pools per block time, the listener's pools), the one
  place that decides which connection a command goes to;
* :class:`~eventbus._transports.redis.listener.RedisListener`: the PubSub thread, its
  watchdog and its reconnection;
* :class:`~eventbus._transports.redis.presence.RedisPresenceStore`
  (``transport.presence``): room members and the client registry;
* :class:`~eventbus._transports.redis.streams.RedisGroupStore` (``transport.groups``):
  durable groups on Streams.

The transport itself publishes: ``publish`` talks to a pooled connection directly,
one PUBLISH, no retry (a retried PUBLISH can be delivered twice), no lock of ours;
``publish_many`` packs every PUBLISH into one buffer and one ``sendall``. Why it is
built this way is in docs/decisions.md ("Transports"); what each failure costs is in
docs/failure-modes.md; its keys and channels are in docs/wire-format.md.

A Sentinel or Cluster transport is built from the same parts: the pools are where a
topology plugs in (see :mod:`eventbus._transports.redis.pools`), and the bus only
sees the three protocols of :mod:`eventbus._transports.base`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from eventbus._core.config import RedisConfig
from eventbus._errors import BusStateError, TransportError
from eventbus._transports.base import MessageSink, TransportState
from eventbus._transports.redis.compat import lend
from eventbus._transports.redis.errors import map_error
from eventbus._transports.redis.listener import RedisListener
from eventbus._transports.redis.pools import RedisPools
from eventbus._transports.redis.presence import RedisPresenceStore
from eventbus._transports.redis.streams import RedisGroupStore

__all__ = ["RedisTransport"]

_PUBLISH_HEADS: dict[str, bytes] = {}


def _pack_publishes(messages: Sequence[tuple[str, bytes]]) -> bytes:
    """RESP for ``PUBLISH channel payload`` per message, packed in one buffer.

    redis-py's ``pack_commands`` encodes every argument and cuts the buffer into 6 KB
    chunks (several ``sendall`` per batch); here each channel's head is built once and
    cached, so a message costs one length header and one concatenation.
    """
    heads = _PUBLISH_HEADS
    parts: list[bytes] = []
    for channel, payload in messages:
        head = heads.get(channel)
        if head is None:
            raw = channel.encode()
            head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(raw), raw)
            if len(heads) < 10_000:
                heads[channel] = head
        parts += (head, b"$%d\r\n" % len(payload), payload, b"\r\n")
    return b"".join(parts)


class RedisTransport:
    """The :class:`~eventbus._transports.base.Transport` over Redis pub/sub, with
    ``presence`` and ``groups`` (Redis Streams) on the same server.

    Example::

        transport = RedisTransport(
            RedisConfig(port=6380),
            client_name="api:h:1:0",
            control_channel="eventbus:ctl:api:h:1:0",
        )
        transport.start(sink)
        transport.psubscribe(["eventbus:ev:photo.*"], timeout=5.0)
        transport.publish("eventbus:ev:photo.uploaded", b"{...}", timeout=2.0)
        transport.stop(timeout=5.0)

    Args:
        config: how to reach Redis.
        client_name: the ``CLIENT SETNAME`` of every connection (the bus's client id).
        control_channel: the bus's private channel, used for listener wake-ups; the
            listener subscribes to it first and never passes its messages on.
    """

    name = "redis"

    def __init__(self, config: RedisConfig, *, client_name: str, control_channel: str) -> None:
        self._config = config
        self._control = control_channel
        self._pools = RedisPools(config, client_name=client_name)
        self._client_name = self._pools.client_name
        self._listener = RedisListener(self._pools, control_channel=control_channel)
        self._lock = threading.Lock()  # start and stop only
        self._state = TransportState.NEW
        self.presence = RedisPresenceStore(self._pools)
        self.groups = RedisGroupStore(self._pools)

    def __repr__(self) -> str:
        return f"<RedisTransport {self._config.url} {self._state.value}>"

    # -- publishing ----------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """PUBLISH once, within ``timeout``; return how many subscriptions received it.

        Raises:
            PublishTimeoutError: no answer within ``timeout`` (it may have been sent).
            TransportConnectionError: the server cannot be reached.
            TransportError: Redis refused the command (e.g. an ACL rule).
            BusStateError: the transport is stopped.
        """
        pool = self._pools.by_deadline.get(timeout)
        if pool is None:
            pool = self._pools.command_pool(timeout)
        try:
            conn: Any = lend(pool)  # redis-py's Connection is untyped
            try:
                conn.send_command("PUBLISH", channel, payload)
                receivers: int = conn.read_response()
            finally:
                pool.release(conn)
        except redis.RedisError as exc:
            raise map_error(exc, f"publish to {channel!r}", timeout, publish=True) from exc
        return receivers

    def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        """PUBLISH several messages in order in one pipeline; receivers per message.

        Raises:
            PublishTimeoutError: no answer within ``timeout`` (some may have been sent).
            TransportConnectionError: the server cannot be reached.
            TransportError: Redis refused one of the commands (the others were sent).
        """
        if not messages:
            return []
        pool = self._pools.by_deadline.get(timeout)
        if pool is None:
            pool = self._pools.command_pool(timeout)
        counts: list[int] = []
        refused: redis.ResponseError | None = None
        try:
            conn: Any = lend(pool)
            try:
                conn.send_packed_command([_pack_publishes(messages)])  # one sendall
                for _ in messages:
                    try:
                        counts.append(conn.read_response())
                    except redis.ResponseError as exc:  # read the other replies all the same
                        refused = refused or exc
                        counts.append(0)
            finally:
                pool.release(conn)
        except redis.RedisError as exc:
            what = f"publish of {len(messages)} messages"
            raise map_error(exc, what, timeout, publish=True) from exc
        if refused is not None:
            raise TransportError(f"publish of {len(messages)} messages: {refused}") from refused
        return counts

    def ping(self, timeout: float) -> float:
        """PING the server through the command pool; return the round trip in seconds.

        Raises:
            TransportConnectionError: the server cannot be reached.
            TransportError: no answer within ``timeout``.
        """
        client = self._pools.command_client(timeout)
        start = time.perf_counter()
        try:
            client.ping()
        except redis.RedisError as exc:
            raise map_error(exc, "ping", timeout) from exc
        return time.perf_counter() - start

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, sink: MessageSink) -> None:
        """Connect, subscribe the control channel, and start the listener thread.

        Raises:
            TransportConnectionError: the server cannot be reached (or refused to log in).
            TransportError: it did not answer within ``socket_timeout``.
            BusStateError: the transport was started before.
        """
        with self._lock:
            if self._state is not TransportState.NEW:
                raise BusStateError(f"the Redis transport cannot start: it is {self._state.value}")
            self._listener.start(sink)
            self._state = TransportState.STARTED

    def stop(self, timeout: float) -> None:
        """Stop the listener (joined within ``timeout``) and close every connection.

        Idempotent. Requests still waiting fail with :class:`TransportError`. Stop
        publishing first: a publish racing with ``stop`` may reopen a socket.
        """
        with self._lock:
            if self._state is TransportState.STOPPED:
                return
            self._state = TransportState.STOPPED
            self._pools.close()
        self._listener.stop(timeout)
        self._pools.disconnect()
        self._listener.fail_waiting()

    def listener_alive(self) -> bool:
        """Whether the listener thread is running."""
        return self._listener.alive()

    def link_up(self) -> bool:
        """Whether the listener's subscription link works now (False while reconnecting)."""
        return self._listener.link_up()

    # -- subscriptions (any thread) ----------------------------------------------------------

    def subscribe(self, channels: Sequence[str], timeout: float) -> None:
        """SUBSCRIBE exact channels; return once the server confirmed every one.

        Raises:
            TransportError: not confirmed within ``timeout`` (the subscription may
                still take effect later: unsubscribe to be sure), or the transport stopped.
            BusStateError: the transport is not running, or this is the listener thread.
        """
        self._listener.request("subscribe", channels, timeout)

    def unsubscribe(self, channels: Sequence[str], timeout: float) -> None:
        """UNSUBSCRIBE exact channels; return once the server confirmed (see :meth:`subscribe`)."""
        self._listener.request("unsubscribe", channels, timeout)

    def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PSUBSCRIBE glob patterns; return once the server confirmed (see :meth:`subscribe`)."""
        self._listener.request("psubscribe", patterns, timeout)

    def punsubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PUNSUBSCRIBE glob patterns; return once the server confirmed (see :meth:`subscribe`)."""
        self._listener.request("punsubscribe", patterns, timeout)
