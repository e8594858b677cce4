"""The Redis pub/sub transport (DESIGN §4-§6): ``redis://``, ``rediss://``, ``unix://``.

Three kinds of connection, all named with ``CLIENT SETNAME``:

* **command pools**, one per distinct deadline, for ``publish``, ``ping`` and the
  presence and client registries. A pool's socket timeout *is* the deadline, so a
  hung server holds a caller about the timeout it passed, also while a new
  connection shakes hands. ``publish`` talks to a pooled connection directly: one
  PUBLISH, no retry (a retried PUBLISH can be delivered twice), no lock of ours.
* a small **wake-up pool** with a short timeout, used to PUBLISH on the bus's control
  channel: wake-ups, so that the listener picks up a (p)subscribe request at once,
  and the watchdog's heartbeats.
* one :class:`redis.client.PubSub`, owned by the **listener thread** alone
  (redis-py's PubSub is not thread-safe): other threads hand it (un)subscribe
  requests through a queue and wait until the server confirmed them.

redis-py never retries nor reconnects by itself here (``Retry(NoBackoff(), 0,
supported_errors=())`` on every pool, from :mod:`eventbus._transports.redis.compat`):
the transport raises typed errors and the caller decides. The listener reconnects by
itself, with exponential backoff and jitter, renews every channel and pattern, and
reports the outage to the sink (``DISCONNECTED`` then ``RECONNECTED``). Every
``health_check_interval`` seconds its watchdog PINGs through its own subscribed
connection and publishes a heartbeat on the control channel; if the PING's reply or
the heartbeat has not come back through the subscription within ``probe_timeout``
seconds (and nothing else arrived meanwhile), the link counts as lost. That catches
a hung server, a half-open socket and a silently lost subscription, none of which
redis-py's own health check detects.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import re
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import redis
from redis.client import PubSub
from redis.connection import (
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)

from eventbus._core.config import RedisConfig
from eventbus._errors import (
    BusStateError,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
    ValidationError,
)
from eventbus._transports.base import ClientRecord, LinkEvent, LinkState, MessageSink
from eventbus._transports.redis.compat import connection_handshake, lend, no_retry
from eventbus._transports.redis.lua import MEMBERS_LUA, RECORDS_LUA, SET_LUA
from eventbus._transports.redis.streams import RedisGroupStore

__all__ = ["RedisTransport"]

logger = logging.getLogger("eventbus.transport")

#: How long the listener blocks in ``get_message`` before it looks at its queue again.
_POLL: Final = 1.0
#: Reconnect backoff: first delay, doubling per attempt up to the cap (with jitter).
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_CAP: Final = 2.0
#: Socket timeout of the wake-up pool: a wake-up is best effort, the poll is the fallback,
#: and a (p)subscribe may overrun its own timeout by this much when Redis hangs.
_WAKE_TIMEOUT: Final = 0.25
_WAKE: Final = b"wake"
_PROBE: Final = b"eventbus-listener-probe"
#: Distinct deadlines that get their own command pool; see ``_pool_for``.
_MAX_POOLS: Final = 8
_SUBSCRIBE_KINDS: Final = ("subscribe", "psubscribe")


class _LinkLost(Exception):
    """The listener's link is unusable although redis-py raised nothing."""


class _Request:
    """A (p)(un)subscribe request on its way to the listener thread."""

    __slots__ = ("cancelled", "done", "error", "kind", "names", "pending")

    def __init__(self, kind: str, names: tuple[str, ...]) -> None:
        self.kind = kind
        self.names = names
        self.pending = set(names)  # touched by the listener thread only
        self.done = threading.Event()
        self.error: TransportError | None = None
        self.cancelled = False


def _keepalive_options() -> dict[int, int]:
    """TCP keepalive: first probe after 30 s idle, then every 5 s, dead after 3 misses."""
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # or macOS
    wanted = ((idle, 30), (getattr(socket, "TCP_KEEPINTVL", None), 5))
    return {c: v for c, v in (*wanted, (getattr(socket, "TCP_KEEPCNT", None), 3)) if c is not None}


def _error(exc: Exception, what: str, timeout: float, *, publish: bool = False) -> TransportError:
    """The eventbus error for a redis-py error (the caller chains it with ``from``)."""
    if isinstance(exc, redis.TimeoutError):
        message = f"{what}: no answer from Redis within {timeout}s"
        return PublishTimeoutError(message, timeout=timeout) if publish else TransportError(message)
    if isinstance(exc, redis.ConnectionError):
        return TransportConnectionError(f"{what}: {exc}")
    return TransportError(f"{what}: {exc}")


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


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class RedisTransport(RedisGroupStore):
    """The :class:`~eventbus._transports.base.Transport` over Redis pub/sub, and the
    :class:`~eventbus._transports.base.GroupStore` over Redis Streams (``redis_streams``).

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
        # CLIENT SETNAME refuses spaces and anything outside '!'..'~'.
        self._client_name = re.sub(r"[^!-~]", "_", client_name)
        self._control = control_channel
        self._control_b = control_channel.encode()
        # Read without a lock on the hot path; replaced (never mutated) by stop().
        self._pools: dict[float, ConnectionPool] = {}
        self._clients: dict[float, redis.Redis] = {}
        self._lock = threading.Lock()  # pool creation, start and stop only
        self._state = "new"  # new -> started -> stopped
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_pool: ConnectionPool | None = None
        self._listen_pool: ConnectionPool | None = None
        # Owned by the listener thread once it runs (by start() before that).
        self._pubsub: PubSub | None = None
        self._sink: MessageSink | None = None
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._waiting: dict[tuple[str, str], list[_Request]] = {}
        self._renewing: set[tuple[str, str]] | None = None
        self._probe_deadline: float | None = None
        # What the current probe still waits for: the PING's reply ("pong") and the
        # heartbeat published on the control channel coming back through the listener.
        self._probe_waiting: set[bytes] = set()
        self._heartbeats = 0
        self._link_up = False  # written by the listener; callers skip wake-ups when down
        # Each call passes client=<its deadline's client>; EVALSHA, loaded on NOSCRIPT.
        registrar = self._client_for(config.socket_timeout)
        self._set_script = registrar.register_script(SET_LUA)
        self._members_script = registrar.register_script(MEMBERS_LUA)
        self._records_script = registrar.register_script(RECORDS_LUA)
        self._init_group_store()

    def __repr__(self) -> str:
        return f"<RedisTransport {self._config.url} {self._state}>"

    # -- connections -------------------------------------------------------------------

    def _make_pool(self, socket_timeout: float, max_connections: int) -> ConnectionPool:
        """A pool whose every timeout, keepalive and retry setting is explicit."""
        cfg = self._config
        kwargs: dict[str, Any] = {
            "db": cfg.db,
            "username": cfg.username,
            "password": cfg.password,
            "client_name": self._client_name,
            # RESP2, no CLIENT SETINFO, no maintenance notifications, in each redis-py
            # release's spelling: redis-py 8 defaults to RESP3 (one more HELLO round trip
            # per connect and maintenance-notification handshakes; RESP2 pub/sub replies
            # are plain arrays) and CLIENT SETINFO costs two round trips per connect.
            **connection_handshake(),
            "decode_responses": False,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": min(cfg.socket_connect_timeout, socket_timeout),
            # Never retry: not a PUBLISH (duplicates), not a connect (the caller's
            # deadline); redis-py 8's default client retries 10 times. No supported
            # errors either, so redis-py does not reconnect (and resubscribe) inside its
            # failure callback: errors reach us at once and the listener renews the link.
            # The connection still closes itself on a failed read or write.
            "retry": no_retry(),
            "retry_on_error": [],
            "retry_on_timeout": False,
            # The pool discards connections the server closed before lending them;
            # the listener runs its own, stronger probe (module docstring).
            "health_check_interval": 0,
            "max_connections": max_connections,
        }
        if cfg.unix_socket_path:
            kwargs.update(connection_class=UnixDomainSocketConnection, path=cfg.unix_socket_path)
        else:
            kwargs.update(
                connection_class=SSLConnection if cfg.ssl else Connection,
                host=cfg.host,
                port=cfg.port,
                socket_keepalive=cfg.socket_keepalive,
                socket_keepalive_options=_keepalive_options() if cfg.socket_keepalive else {},
            )
            if cfg.ssl:
                kwargs.update(
                    ssl_ca_certs=cfg.ssl_ca_certs, ssl_cert_reqs="required", ssl_check_hostname=True
                )
        return ConnectionPool(**kwargs)

    def _pool_for(self, timeout: float) -> ConnectionPool:
        """The command pool whose socket timeout is ``timeout`` (created on first use).

        Past ``_MAX_POOLS`` distinct values, a new deadline borrows the pool of the
        nearest shorter one, so the deadline still holds.
        """
        with self._lock:
            if self._state == "stopped":
                raise BusStateError("the Redis transport is stopped")
            pool = self._pools.get(timeout)
            if pool is not None:
                return pool
            if not isinstance(timeout, int | float) or not timeout > 0:
                raise ValidationError(f"timeout must be a number > 0, got {timeout!r}")
            shorter = [t for t in self._pools if t <= timeout]
            if len(self._pools) >= _MAX_POOLS and shorter:
                return self._pools[max(shorter)]
            pool = self._make_pool(timeout, self._config.max_connections)
            pools, clients = dict(self._pools), dict(self._clients)
            pools[timeout] = pool
            clients[timeout] = redis.Redis(connection_pool=pool)
            self._clients, self._pools = clients, pools
            return pool

    def _client_for(self, timeout: float) -> redis.Redis:
        client = self._clients.get(timeout)
        if client is None:
            pool = self._pool_for(timeout)
            client = self._clients.get(timeout)
            if client is None:  # borrowed a shorter deadline's pool
                client = redis.Redis(connection_pool=pool)
        return client

    # -- publishing ----------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """PUBLISH once, within ``timeout``; return how many subscriptions received it.

        Raises:
            PublishTimeoutError: no answer within ``timeout`` (it may have been sent).
            TransportConnectionError: the server cannot be reached.
            TransportError: Redis refused the command (e.g. an ACL rule).
        """
        pool = self._pools.get(timeout)
        if pool is None:
            pool = self._pool_for(timeout)
        try:
            conn: Any = lend(pool)  # redis-py's Connection is untyped
            try:
                conn.send_command("PUBLISH", channel, payload)
                receivers: int = conn.read_response()
            finally:
                pool.release(conn)
        except redis.RedisError as exc:
            raise _error(exc, f"publish to {channel!r}", timeout, publish=True) from exc
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
        pool = self._pools.get(timeout)
        if pool is None:
            pool = self._pool_for(timeout)
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
            raise _error(
                exc, f"publish of {len(messages)} messages", timeout, publish=True
            ) from exc
        if refused is not None:
            raise TransportError(f"publish of {len(messages)} messages: {refused}") from refused
        return counts

    def ping(self, timeout: float) -> float:
        """PING the server through the command pool; return the round trip in seconds.

        Raises:
            TransportConnectionError: the server cannot be reached.
            TransportError: no answer within ``timeout``.
        """
        client = self._client_for(timeout)
        start = time.perf_counter()
        try:
            client.ping()
        except redis.RedisError as exc:
            raise _error(exc, "ping", timeout) from exc
        return time.perf_counter() - start

    # -- presence and client registry ------------------------------------------------------

    def presence_set(
        self, zset_key: str, hash_key: str, member: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Add or refresh ``member`` for ``ttl`` seconds, with its ``info``, in one script.

        The expiry is the server's TIME plus ``ttl`` (client clocks may be skewed); both
        keys live a little longer than ``ttl``, so an abandoned room disappears.
        """
        ttl_ms = max(1, int(ttl * 1000))
        args: list[str | bytes | int] = [member, info, ttl_ms, ttl_ms + max(1000, ttl_ms // 10)]
        try:
            self._set_script(keys=[zset_key, hash_key], args=args, client=self._client_for(timeout))
        except redis.RedisError as exc:
            raise _error(exc, f"register {member!r} in {zset_key!r}", timeout) from exc

    def presence_remove(self, zset_key: str, hash_key: str, member: str, timeout: float) -> None:
        """Remove ``member`` now (ZREM and HDEL in one MULTI)."""
        pipe = self._client_for(timeout).pipeline(transaction=True)
        pipe.zrem(zset_key, member)
        pipe.hdel(hash_key, member)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise _error(exc, f"remove {member!r} from {zset_key!r}", timeout) from exc

    def presence_members(self, zset_key: str, hash_key: str, timeout: float) -> list[str]:
        """Live members, sorted; expired ones (by the server clock) pruned first."""
        client = self._client_for(timeout)
        try:
            raw = self._members_script(keys=[zset_key, hash_key], client=client)
        except redis.RedisError as exc:
            raise _error(exc, f"members of {zset_key!r}", timeout) from exc
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
        client = self._client_for(timeout)
        try:
            raw = self._records_script(keys=[zset_key, hash_key], client=client)
        except redis.RedisError as exc:
            raise _error(exc, f"clients in {zset_key!r}", timeout) from exc
        records = [
            ClientRecord(
                client_id=_decode(raw[i]),
                info=raw[i + 2] or b"",
                expires_at=int(raw[i + 1]) / 1000,
            )
            for i in range(0, len(raw), 3)
        ]
        return sorted(records, key=lambda r: r.client_id)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, sink: MessageSink) -> None:
        """Connect, subscribe the control channel, and start the listener thread.

        Raises:
            TransportConnectionError: the server cannot be reached (or refused to log in).
            TransportError: it did not answer within ``socket_timeout``.
            BusStateError: the transport was started before.
        """
        cfg = self._config
        with self._lock:
            if self._state != "new":
                raise BusStateError(f"the Redis transport cannot start: it is {self._state}")
            self._wake_pool = self._make_pool(min(_WAKE_TIMEOUT, cfg.socket_timeout), 4)
            self._listen_pool = self._make_pool(cfg.socket_timeout, 1)
            self._pubsub = PubSub(self._listen_pool, ignore_subscribe_messages=False)
            self._sink = sink
            try:
                self._renew()
            except (redis.RedisError, _LinkLost) as exc:
                self._pubsub.close()
                self._listen_pool.disconnect()
                if isinstance(exc, redis.RedisError):
                    raise _error(exc, f"connect to {cfg.url}", cfg.socket_timeout) from exc
                raise TransportError(f"connect to {cfg.url}: {exc}") from exc
            self._state = "started"
            self._thread = threading.Thread(target=self._run, name="eventbus-listener", daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the listener (joined within ``timeout``) and close every connection.

        Idempotent. Requests still waiting fail with :class:`TransportError`. Stop
        publishing first: a publish racing with ``stop`` may reopen a socket.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
            pools = [*self._pools.values(), *self._take_read_pools()]
            self._pools, self._clients = {}, {}
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            self._wake()
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning(
                    "listener thread did not stop within %ss; closing its socket", timeout
                )
        for pool in (*pools, self._wake_pool, self._listen_pool):
            if pool is not None:
                pool.disconnect()
        self._fail_waiting()

    def listener_alive(self) -> bool:
        """Whether the listener thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def link_up(self) -> bool:
        """Whether the listener's subscription link works now (False while reconnecting)."""
        return self._link_up and self.listener_alive()

    # -- subscriptions (any thread) ----------------------------------------------------------

    def subscribe(self, channels: Sequence[str], timeout: float) -> None:
        """SUBSCRIBE exact channels; return once the server confirmed every one.

        Raises:
            TransportError: not confirmed within ``timeout`` (the subscription may
                still take effect later: unsubscribe to be sure), or the transport stopped.
            BusStateError: the transport is not running, or this is the listener thread.
        """
        self._request("subscribe", channels, timeout)

    def unsubscribe(self, channels: Sequence[str], timeout: float) -> None:
        """UNSUBSCRIBE exact channels; return once the server confirmed (see :meth:`subscribe`)."""
        self._request("unsubscribe", channels, timeout)

    def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PSUBSCRIBE glob patterns; return once the server confirmed (see :meth:`subscribe`)."""
        self._request("psubscribe", patterns, timeout)

    def punsubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PUNSUBSCRIBE glob patterns; return once the server confirmed (see :meth:`subscribe`)."""
        self._request("punsubscribe", patterns, timeout)

    def _request(self, kind: str, names: Sequence[str], timeout: float) -> None:
        if isinstance(names, str):
            raise ValidationError(f"{kind} takes a sequence of names, not the string {names!r}")
        if self._state != "started" or self._stop_event.is_set():
            raise BusStateError(f"cannot {kind}: the Redis transport is {self._state}")
        if threading.current_thread() is self._thread:
            raise BusStateError(
                f"cannot {kind} from the listener thread (it would wait for itself)"
            )
        request = _Request(kind, tuple(dict.fromkeys(names)))
        if not request.names:
            return
        deadline = time.monotonic() + timeout
        self._requests.put(request)
        self._wake()
        if not request.done.wait(max(0.0, deadline - time.monotonic())):
            request.cancelled = True
            raise TransportError(
                f"{kind} {list(request.names)!r}: not confirmed by Redis within {timeout}s"
            )
        if request.error is not None:
            raise request.error

    def _wake(self) -> None:
        """PUBLISH a wake-up for the listener; best effort (it polls every second anyway)."""
        if self._link_up:
            self._publish_control(_WAKE)

    def _publish_control(self, data: bytes) -> None:
        """PUBLISH ``data`` on the control channel through the wake-up pool; best effort."""
        pool = self._wake_pool
        if pool is None:
            return
        try:
            conn: Any = lend(pool)
            try:
                conn.send_command("PUBLISH", self._control, data)
                conn.read_response()
            finally:
                pool.release(conn)
        except redis.RedisError as exc:
            logger.debug("publish on the control channel failed: %s", exc)

    # -- the listener thread -----------------------------------------------------------------

    def _run(self) -> None:
        """The listener's main loop: serve until stopped; on any failure, reconnect."""
        try:
            while not self._stop_event.is_set():
                try:
                    self._serve()
                except Exception as exc:
                    if self._stop_event.is_set():
                        break
                    expected = (redis.ConnectionError, redis.TimeoutError, OSError, _LinkLost)
                    if not isinstance(exc, expected):
                        logger.exception("listener failed unexpectedly; reconnecting")
                    self._link_up = False
                    reason = str(exc) or type(exc).__name__
                    logger.warning("Redis subscription link lost: %s", reason)
                    self._report(LinkState.DISCONNECTED, reason, exc)
                    if self._reconnect():
                        logger.info("Redis subscription link renewed")
                        self._report(LinkState.RECONNECTED, "subscriptions renewed", None)
        finally:
            if self._pubsub is not None:
                try:
                    self._pubsub.close()
                except Exception:  # closing a broken socket; nothing left to do
                    logger.debug("closing the PubSub failed", exc_info=True)
            self._fail_waiting()

    def _serve(self) -> None:
        """Read messages, and carry out requests, until stopped or the link fails."""
        assert self._pubsub is not None
        pubsub, requests, stop = self._pubsub, self._requests, self._stop_event
        interval, probe_timeout = self._config.health_check_interval, self._config.probe_timeout
        next_probe, idle = time.monotonic() + interval, True
        while not stop.is_set():
            if not requests.empty():
                self._drain(pubsub)
            wait = _POLL
            if interval:  # PING through this very connection; the reply must come back
                now = time.monotonic()
                if self._probe_deadline is None and now >= next_probe:
                    next_probe = now + interval
                    self._probe_deadline = now + probe_timeout
                    self._heartbeats += 1
                    beat = b"hb:%d" % self._heartbeats
                    self._probe_waiting = {_PROBE, beat}
                    pubsub.ping(_PROBE.decode())
                    self._publish_control(beat)  # may block up to _WAKE_TIMEOUT
                    now = time.monotonic()
                if self._probe_deadline is None:
                    wait = min(wait, next_probe - now)
                elif now > self._probe_deadline and idle:  # a backlog may hold the reply
                    missing = " and ".join(
                        "the reply to its PING" if item == _PROBE else "its heartbeat message"
                        for item in sorted(self._probe_waiting)
                    )
                    raise _LinkLost(f"the listener did not get {missing} within {probe_timeout}s")
                else:
                    wait = min(wait, self._probe_deadline - now)
            message = pubsub.get_message(timeout=max(0.0, wait))
            idle = message is None
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        """Pass one message to the sink, or account for a confirmation or probe reply."""
        kind = message["type"]
        if kind == "pmessage" or kind == "message":
            channel: bytes = message["channel"]
            if channel == self._control_b:
                self._probe_seen(message["data"])
                return
            assert self._sink is not None
            name = _decode(channel)
            key = name if kind == "message" else _decode(message["pattern"])
            try:
                self._sink.on_message(key, name, message["data"])
            except Exception:
                logger.exception("the message sink failed on a message from %r", name)
        elif kind == "pong":
            self._probe_seen(message["data"])
        elif message["channel"] is not None:
            self._confirm(kind, _decode(message["channel"]))

    def _probe_seen(self, data: bytes) -> None:
        """One part of the current probe came back; the probe is done when both have."""
        waiting = self._probe_waiting
        if data in waiting:
            waiting.discard(data)
            if not waiting:
                self._probe_deadline = None

    def _confirm(self, kind: str, name: str) -> None:
        if self._renewing is not None:
            self._renewing.discard((kind, name))
        for request in self._waiting.pop((kind, name), ()):
            request.pending.discard(name)
            if not request.pending:
                request.done.set()

    def _drain(self, pubsub: PubSub) -> None:
        """Send every queued request; waiters are registered before the command goes out."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.cancelled:
                continue
            kind, names = request.kind, request.names
            for name in names:
                self._waiting.setdefault((kind, name), []).append(request)
            if kind == "subscribe":
                self._channels.update(names)
                pubsub.subscribe(*names)
            elif kind == "psubscribe":
                self._patterns.update(names)
                pubsub.psubscribe(*names)
            elif kind == "unsubscribe":
                self._channels.difference_update(names)
                pubsub.unsubscribe(*names)  # type: ignore[no-untyped-call]
            else:
                self._patterns.difference_update(names)
                pubsub.punsubscribe(*names)  # type: ignore[no-untyped-call]

    def _renew(self) -> None:
        """Open a fresh subscription connection and subscribe everything; wait for Redis."""
        assert self._pubsub is not None
        pubsub = self._pubsub
        pubsub.reset()  # closes the old socket and forgets redis-py's own bookkeeping
        self._probe_deadline = None
        self._probe_waiting = set()
        # A fresh connection has no subscriptions: pending unsubscribes hold already.
        for key in [k for k in self._waiting if k[0] not in _SUBSCRIBE_KINDS]:
            self._confirm(*key)
        expected = {("subscribe", self._control)}
        expected.update(("subscribe", c) for c in self._channels)
        expected.update(("psubscribe", p) for p in self._patterns)
        self._renewing = expected
        try:
            pubsub.subscribe(self._control, *self._channels)
            if self._patterns:
                pubsub.psubscribe(*self._patterns)
            deadline = time.monotonic() + self._config.socket_timeout
            while self._renewing and not self._stop_event.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _LinkLost(
                        f"subscriptions not confirmed within {self._config.socket_timeout}s"
                    )
                message = pubsub.get_message(timeout=min(left, _POLL))
                if message is not None:
                    self._handle(message)
        finally:
            self._renewing = None
        self._link_up = True

    def _reconnect(self) -> bool:
        """Renew the link with backoff until it works (True) or the transport stops (False)."""
        attempt = 0
        while True:
            delay = 0.0 if attempt == 0 else min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** (attempt - 1))
            if self._stop_event.wait(random.uniform(delay / 2, delay)):
                return False
            attempt += 1
            try:
                self._renew()
            except Exception as exc:
                logger.debug("reconnect attempt %d failed: %s", attempt, exc)
                continue
            return not self._stop_event.is_set()

    def _report(self, state: LinkState, reason: str, error: BaseException | None) -> None:
        assert self._sink is not None
        try:
            self._sink.on_link(LinkEvent(state=state, reason=reason, error=error))
        except Exception:
            logger.exception("the message sink failed on a link event (%s)", state.value)

    def _fail_waiting(self) -> None:
        """Release every caller still waiting for a confirmation (the transport stopped)."""
        waiting = [r for requests in list(self._waiting.values()) for r in requests]
        with contextlib.suppress(queue.Empty):
            while True:
                waiting.append(self._requests.get_nowait())
        for request in waiting:
            request.error = TransportError("the Redis transport stopped before Redis confirmed")
            request.done.set()
