"""The listener of the Redis transport: one PubSub connection, one thread.

A :class:`redis.client.PubSub` is not thread-safe, so the ``eventbus-listener`` thread
owns it alone: other threads hand it (p)(un)subscribe requests through a queue, wake
it with a message on the bus's control channel, and wait until Redis confirmed. It
passes every message to the transport's :class:`~eventbus._transports.base.MessageSink`.

**Reconnecting.** When the link fails, the listener reports ``DISCONNECTED`` to the
sink, renews it on a fresh connection with the delays of
:class:`~eventbus._core.backoff.ReconnectPolicy`, subscribes every channel and
pattern again, waits for Redis to confirm them all, and reports ``RECONNECTED``.

**Refusals.** Redis answers a (P)SUBSCRIBE it refuses (an ACL without the channel:
``NOPERM``) with one error in place of every confirmation of that command. Replies
come in the order the commands went out, so the error belongs to the oldest
(p)subscribe request still unconfirmed: that request fails at once with a
:class:`~eventbus.TransportError` naming the names and Redis's reason, its names are
forgotten, and the link and every other subscription stay as they are.

**The watchdog.** Every ``health_check_interval`` seconds it PINGs through its own
subscribed connection and publishes a heartbeat on the control channel; if the PING's
reply or the heartbeat has not come back through the subscription within
``probe_timeout`` seconds (and nothing else arrived meanwhile), the link counts as
lost. That catches a hung server, a half-open socket and a silently lost
subscription, none of which redis-py's own health check detects (see
docs/decisions.md, "The listener's watchdog", and docs/failure-modes.md).

The listener borrows its two pools from
:class:`~eventbus._transports.redis.pools.RedisPools` and knows nothing else of the
transport. On a Sentinel switch the pools'
:meth:`~eventbus._transports.redis.pools.RedisPools.disconnect` makes it renew its link
on the new master, with the rest of the transport; a Cluster listener is this one with
one PubSub per node, read from the same single thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import redis
from redis.client import PubSub
from redis.connection import ConnectionPool

from eventbus._core.backoff import ReconnectPolicy
from eventbus._errors import BusStateError, TransportError, ValidationError
from eventbus._transports.base import LinkEvent, LinkState, MessageSink, TransportState
from eventbus._transports.redis.compat import lend
from eventbus._transports.redis.errors import map_error
from eventbus._transports.redis.pools import RedisPools

__all__ = ["RedisListener"]

logger = logging.getLogger("eventbus.transport")

#: How long the listener blocks in ``get_message`` before it looks at its queue again.
_POLL: Final = 1.0
#: Socket timeout of the wake-up pool: a wake-up is best effort, the poll is the fallback,
#: and a (p)subscribe may overrun its own timeout by this much when Redis hangs.
_WAKE_TIMEOUT: Final = 0.25
_WAKE: Final = b"wake"
_PROBE: Final = b"eventbus-listener-probe"
_SUBSCRIBE_KINDS: Final = ("subscribe", "psubscribe")


class _LinkLostError(Exception):
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


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class RedisListener:
    """The subscription side of a Redis transport: a PubSub owned by one thread.

    Example::

        listener = RedisListener(pools, control_channel="eventbus:ctl:api:h:1:0")
        listener.start(sink)
        listener.request("psubscribe", ["eventbus:ev:photo.*"], timeout=5.0)
        listener.stop(timeout=5.0)

    Args:
        pools: where its connections come from.
        control_channel: the bus's private channel: subscribed first, used for wake-ups
            and the watchdog's heartbeats, never passed on to the sink.
        policy: the delays between reconnection attempts.
    """

    def __init__(
        self,
        pools: RedisPools,
        *,
        control_channel: str,
        policy: ReconnectPolicy | None = None,
    ) -> None:
        self._pools = pools
        self._config = pools.config
        self._policy = policy or ReconnectPolicy()
        self._control = control_channel
        self._control_b = control_channel.encode()
        self._state = TransportState.NEW
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._stop_event = threading.Event()
        #: The listener thread, once started.
        self.thread: threading.Thread | None = None
        self._wake_pool: ConnectionPool | None = None
        # Owned by the listener thread once it runs (by start() before that).
        self._pubsub: PubSub | None = None
        self._sink: MessageSink | None = None
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._waiting: dict[tuple[str, str], list[_Request]] = {}
        # (P)subscribe requests sent on this connection and not yet confirmed, in the
        # order they went out: a refusal belongs to the oldest (see the docstring).
        self._unconfirmed: collections.deque[_Request] = collections.deque()
        self._renewing: set[tuple[str, str]] | None = None
        self._probe_deadline: float | None = None
        # What the current probe still waits for: the PING's reply ("pong") and the
        # heartbeat published on the control channel coming back through the listener.
        self._probe_waiting: set[bytes] = set()
        self._heartbeats = 0
        self._link_up = False  # written by the listener; callers skip wake-ups when down

    # -- lifecycle (the transport's lock held) -------------------------------------------

    def start(self, sink: MessageSink) -> None:
        """Connect, subscribe the control channel, and start the listener thread.

        Raises:
            TransportConnectionError: the server cannot be reached (or refused to log in).
            TransportError: it did not answer within ``socket_timeout``.
        """
        cfg = self._config
        self._wake_pool = self._pools.make_pool(min(_WAKE_TIMEOUT, cfg.socket_timeout), 4)
        listen_pool = self._pools.make_pool(cfg.socket_timeout, 1)
        self._pubsub = PubSub(listen_pool, ignore_subscribe_messages=False)
        self._sink = sink
        try:
            self._renew()
        except (redis.RedisError, _LinkLostError) as exc:
            self._pubsub.close()
            listen_pool.disconnect()
            if isinstance(exc, redis.RedisError):
                raise map_error(exc, f"connect to {cfg.url}", cfg.socket_timeout) from exc
            raise TransportError(f"connect to {cfg.url}: {exc}") from exc
        self._state = TransportState.STARTED
        self.thread = threading.Thread(target=self._run, name="eventbus-listener", daemon=True)
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread (joined within ``timeout``); requests still waiting fail.

        Its connections are closed by the pools' ``disconnect()``, after this.
        """
        self._state = TransportState.STOPPED
        self._stop_event.set()
        thread = self.thread
        if thread is not None:
            self.wake()
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "listener thread did not stop within %ss; closing its socket", timeout
                )

    def alive(self) -> bool:
        """Whether the listener thread is running."""
        return self.thread is not None and self.thread.is_alive()

    def link_up(self) -> bool:
        """Whether the subscription link works now (False while reconnecting)."""
        return self._link_up and self.alive()

    # -- requests (any thread) -----------------------------------------------------------

    def request(self, kind: str, names: Sequence[str], timeout: float) -> None:
        """Carry out ``subscribe``, ``unsubscribe``, ``psubscribe`` or ``punsubscribe``
        of ``names`` on the listener thread; return once Redis confirmed every one.

        Raises:
            TransportError: not confirmed within ``timeout`` (the subscription may
                still take effect later: unsubscribe to be sure), or the listener stopped.
            BusStateError: the listener is not running, or this is the listener thread.
            ValidationError: ``names`` is a string.
        """
        if isinstance(names, str):
            raise ValidationError(f"{kind} takes a sequence of names, not the string {names!r}")
        if self._state is not TransportState.STARTED or self._stop_event.is_set():
            raise BusStateError(f"cannot {kind}: the Redis transport is {self._state.value}")
        if threading.current_thread() is self.thread:
            raise BusStateError(
                f"cannot {kind} from the listener thread (it would wait for itself)"
            )
        request = _Request(kind, tuple(dict.fromkeys(names)))
        if not request.names:
            return
        deadline = time.monotonic() + timeout
        self._requests.put(request)
        self.wake()
        if not request.done.wait(max(0.0, deadline - time.monotonic())):
            request.cancelled = True
            raise TransportError(
                f"{kind} {list(request.names)!r}: not confirmed by Redis within {timeout}s"
            )
        if request.error is not None:
            raise request.error

    def wake(self) -> None:
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

    def fail_waiting(self) -> None:
        """Release every caller still waiting for a confirmation (the transport stopped)."""
        waiting = [r for requests in list(self._waiting.values()) for r in requests]
        with contextlib.suppress(queue.Empty):
            while True:
                waiting.append(self._requests.get_nowait())
        for request in waiting:
            request.error = TransportError("the Redis transport stopped before Redis confirmed")
            request.done.set()

    # -- the listener thread -------------------------------------------------------------

    def _run(self) -> None:
        """The listener's main loop: serve until stopped; on any failure, reconnect."""
        try:
            while not self._stop_event.is_set():
                try:
                    self._serve()
                except Exception as exc:
                    if self._stop_event.is_set():
                        break
                    expected = (redis.ConnectionError, redis.TimeoutError, OSError, _LinkLostError)
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
            self.fail_waiting()

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
                    raise _LinkLostError(
                        f"the listener did not get {missing} within {probe_timeout}s"
                    )
                else:
                    wait = min(wait, self._probe_deadline - now)
            try:
                message = pubsub.get_message(timeout=max(0.0, wait))
            except redis.ResponseError as exc:  # a refused command; the link is fine
                self._refused(pubsub, exc)
                continue
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

    def _forget_confirmed(self) -> None:
        """Drop the confirmed requests at the head of :attr:`_unconfirmed` (it stays
        as short as the requests in flight)."""
        while self._unconfirmed and self._unconfirmed[0].done.is_set():
            self._unconfirmed.popleft()

    def _refused(self, pubsub: PubSub, error: redis.ResponseError) -> None:
        """Redis refused a command: fail the oldest unconfirmed (p)subscribe request."""
        self._forget_confirmed()
        if not self._unconfirmed:
            logger.error("Redis refused a command of the listener: %s", error)
            return
        request = self._unconfirmed.popleft()
        kind, names = request.kind, request.names
        subscribed = self._channels if kind == "subscribe" else self._patterns
        known = pubsub.channels if kind == "subscribe" else pubsub.patterns
        for name in names:
            subscribed.discard(name)
            known.pop(name, None)  # redis-py's own record, which a renewal would replay
            waiters = self._waiting.get((kind, name), [])
            if request in waiters:
                waiters.remove(request)
            if not waiters:
                self._waiting.pop((kind, name), None)
        logger.warning("Redis refused %s %s: %s", kind, list(names), error)
        request.error = TransportError(f"{kind} {list(names)!r}: refused by Redis: {error}")
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
            if kind in _SUBSCRIBE_KINDS:
                self._forget_confirmed()
                self._unconfirmed.append(request)
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
        # The old connection's replies never come; what it still waited for is
        # subscribed again below, and confirmed by the renewal.
        self._unconfirmed.clear()
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
                    raise _LinkLostError(
                        f"subscriptions not confirmed within {self._config.socket_timeout}s"
                    )
                message = pubsub.get_message(timeout=min(left, _POLL))
                if message is not None:
                    self._handle(message)
        finally:
            self._renewing = None
        self._link_up = True

    def _reconnect(self) -> bool:
        """Renew the link with backoff until it works (True) or the listener stops (False)."""
        attempt = 0
        while self._policy.wait(attempt, self._stop_event):
            attempt += 1
            try:
                self._renew()
            except Exception as exc:
                logger.debug("reconnect attempt %d failed: %s", attempt, exc)
                continue
            return not self._stop_event.is_set()
        return False

    def _report(self, state: LinkState, reason: str, error: BaseException | None) -> None:
        assert self._sink is not None
        try:
            self._sink.on_link(LinkEvent(state=state, reason=reason, error=error))
        except Exception:
            logger.exception("the message sink failed on a link event (%s)", state.value)
