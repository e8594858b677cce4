"""The embedded ``memory://`` transport: an in-process broker, standard library only.

Buses in one process that use the same URL share one broker, as if they shared one
Redis: ``memory://`` is the default broker, ``memory://name`` a separate one (tests
use a fresh name each to stay apart). Delivery semantics mirror Redis pub/sub:
patterns match with the same glob rules (one matcher, :mod:`eventbus._core.patterns`),
a message matching two patterns of one bus arrives once per pattern, and each bus
gets its messages on its own listener thread (or, made with ``threaded=False``, in the
thread that calls :meth:`MemoryTransport.deliver_pending`: the testing kit's recording
transport). Presence and the client registry (``transport.presence``) expire the way
the Redis keys do, and durable groups (``transport.groups``) follow Redis Streams'
semantics. Nothing crosses a process boundary.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar
from urllib.parse import urlsplit

from eventbus._core.patterns import compile_glob
from eventbus._errors import ConfigurationError, TransportConnectionError
from eventbus._models import DeadLetter, GroupInfo
from eventbus._transports.base import (
    ClientRecord,
    MessageSink,
    StreamEntry,
    StreamTarget,
    TransportState,
)
from eventbus._transports.memory.streams import MemoryStreams

__all__ = ["MemoryBroker", "MemoryGroupStore", "MemoryPresenceStore", "MemoryTransport"]

log = logging.getLogger("eventbus.transport")

_STOP = ("", "", b"")  # compared by identity: no real message is this tuple


class _Registry:
    """Members with an expiry and an info document (a room, or the client list)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, bytes]] = {}

    def set(self, member: str, info: bytes, ttl: float) -> None:
        self.entries[member] = (time.time() + ttl, info)

    def live(self) -> dict[str, tuple[float, bytes]]:
        now = time.time()
        for member in [m for m, (expiry, _) in self.entries.items() if expiry < now]:
            del self.entries[member]
        return self.entries


def _reset_brokers_after_fork() -> None:
    """In a forked child: fresh locks, and none of the parent's subscribers."""
    MemoryBroker._brokers_lock = threading.Lock()
    for broker in MemoryBroker._brokers.values():
        broker.lock = threading.Lock()
        broker.transports = set()
        broker.streams.reset(broker.lock)


class MemoryBroker:
    """One shared in-process pub/sub hub with presence storage.

    Nothing crosses a process boundary: a forked child starts with the parent's
    brokers empty of subscribers (it keeps the presence records it inherited).
    """

    _brokers: ClassVar[dict[str, MemoryBroker]] = {}
    _brokers_lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.transports: set[MemoryTransport] = set()
        self.registries: dict[str, _Registry] = {}
        self.streams = MemoryStreams(self.lock)

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The process-wide broker called ``name``, created on first use."""
        with cls._brokers_lock:
            broker = cls._brokers.get(name)
            if broker is None:
                broker = cls._brokers[name] = MemoryBroker(name)
            return broker

    def publish(self, channel: str, payload: bytes, targets: Sequence[StreamTarget] = ()) -> int:
        """Deliver to every subscribed transport and append to the ``targets`` streams,
        atomically; return the number of deliveries."""
        receivers = 0
        with self.lock:
            if targets:
                self.streams.route_locked(payload, targets)
            for transport in self.transports:
                if channel in transport.channels:
                    transport.inbox.put((channel, channel, payload))
                    receivers += 1
                for pattern in transport.patterns:
                    if compile_glob(pattern).matches(channel):
                        transport.inbox.put((pattern, channel, payload))
                        receivers += 1
        return receivers

    def registry(self, key: str) -> _Registry:
        """The registry stored under ``key`` (lock held by the caller)."""
        found = self.registries.get(key)
        if found is None:
            found = self.registries[key] = _Registry()
        return found


class MemoryTransport:
    """A :class:`~eventbus._transports.base.Transport` on a :class:`MemoryBroker`, with
    ``presence`` and ``groups`` on the same broker."""

    name = "memory"

    def __init__(self, broker: MemoryBroker, *, threaded: bool = True) -> None:
        self.broker = broker
        # Ordered sets: a message matching several patterns arrives once per pattern,
        # in the order they were subscribed.
        self.channels: dict[str, None] = {}
        self.patterns: dict[str, None] = {}
        self.inbox: queue.SimpleQueue[tuple[str, str, bytes]] = queue.SimpleQueue()
        self._threaded = threaded
        self._sink: MessageSink | None = None
        self._listener: threading.Thread | None = None
        self._state = TransportState.NEW
        self.presence = MemoryPresenceStore(broker, self.check_started)
        self.groups = MemoryGroupStore(broker, self.check_started)

    @classmethod
    def from_url(cls, url: str) -> MemoryTransport:
        """``memory://`` (the default broker) or ``memory://name``."""
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ConfigurationError(f"url: not a memory:// URL: {url!r}")
        name = (parts.netloc + parts.path).strip("/") or "default"
        return cls(MemoryBroker.named(name))

    def start(self, sink: MessageSink) -> None:
        """Join the broker and start the listener thread (unless made ``threaded=False``)."""
        self._sink = sink
        if self._threaded:
            self._listener = threading.Thread(
                target=self._listen, args=(sink,), name="eventbus-listener", daemon=True
            )
            self._listener.start()
        with self.broker.lock:
            self.broker.transports.add(self)
        self._state = TransportState.STARTED

    def _listen(self, sink: MessageSink) -> None:
        while True:
            item = self.inbox.get()
            if item is _STOP:
                return
            key, channel, payload = item
            try:
                sink.on_message(key, channel, payload)
            except Exception:
                log.exception("the bus failed to take a message from %s", channel)

    def deliver_pending(self) -> int:
        """Hand the messages waiting in the inbox to the sink, in this thread; how many.

        For a transport made with ``threaded=False``, which has no listener thread.
        """
        sink = self._sink
        delivered = 0
        while sink is not None:
            try:
                key, channel, payload = self.inbox.get_nowait()
            except queue.Empty:
                break
            sink.on_message(key, channel, payload)
            delivered += 1
        return delivered

    def stop(self, timeout: float) -> None:
        """Leave the broker and join the listener thread."""
        with self.broker.lock:
            self.broker.transports.discard(self)
            self.channels.clear()
            self.patterns.clear()
        if self._listener is not None:
            self.inbox.put(_STOP)
            self._listener.join(timeout)
        self._state = TransportState.STOPPED

    def check_started(self) -> None:
        """Raise :class:`TransportConnectionError` unless the transport is started."""
        if self._state is not TransportState.STARTED:
            raise TransportConnectionError(f"memory broker {self.broker.name!r}: not started")

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """Deliver one message to the broker's subscribers."""
        self.check_started()
        return self.broker.publish(channel, payload)

    def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        """Deliver several messages in order."""
        self.check_started()
        return [self.broker.publish(channel, payload) for channel, payload in messages]

    def subscribe(self, channels: Sequence[str], timeout: float) -> None:
        """Add exact channels."""
        with self.broker.lock:
            self.channels.update(dict.fromkeys(channels))

    def unsubscribe(self, channels: Sequence[str], timeout: float) -> None:
        """Drop exact channels."""
        with self.broker.lock:
            for channel in channels:
                self.channels.pop(channel, None)

    def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """Add glob patterns."""
        with self.broker.lock:
            self.patterns.update(dict.fromkeys(patterns))

    def punsubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """Drop glob patterns."""
        with self.broker.lock:
            for pattern in patterns:
                self.patterns.pop(pattern, None)

    def ping(self, timeout: float) -> float:
        """Round-trip the broker's lock; the latency in seconds."""
        self.check_started()
        started = time.perf_counter()
        with self.broker.lock:
            pass
        return time.perf_counter() - started

    def listener_alive(self) -> bool:
        """Whether the listener thread runs (without one: whether the transport is started)."""
        if not self._threaded:
            return self._state is TransportState.STARTED
        return self._listener is not None and self._listener.is_alive()

    def link_up(self) -> bool:
        """Whether the transport is joined to its broker with a live listener."""
        return self._state is TransportState.STARTED and self.listener_alive()


class MemoryPresenceStore:
    """The :class:`~eventbus._transports.base.PresenceStore` on a :class:`MemoryBroker`.

    Args:
        broker: where the records live.
        check: raises unless the transport is started (reads and writes need it;
            removals do not, so a stopping bus can still leave).
    """

    def __init__(self, broker: MemoryBroker, check: Callable[[], None]) -> None:
        self._broker = broker
        self._check = check

    def presence_set(
        self, zset_key: str, hash_key: str, member: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Add or refresh a room member."""
        self._check()
        with self._broker.lock:
            self._broker.registry(zset_key).set(member, info, ttl)

    def presence_remove(self, zset_key: str, hash_key: str, member: str, timeout: float) -> None:
        """Remove a room member."""
        with self._broker.lock:
            self._broker.registry(zset_key).entries.pop(member, None)

    def presence_members(self, zset_key: str, hash_key: str, timeout: float) -> list[str]:
        """Live members of a room, sorted."""
        self._check()
        with self._broker.lock:
            return sorted(self._broker.registry(zset_key).live())

    def client_set(
        self, zset_key: str, hash_key: str, client_id: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Register or refresh a live bus."""
        self.presence_set(zset_key, hash_key, client_id, info, ttl, timeout)

    def client_remove(self, zset_key: str, hash_key: str, client_id: str, timeout: float) -> None:
        """Remove a bus's registration."""
        self.presence_remove(zset_key, hash_key, client_id, timeout)

    def client_list(self, zset_key: str, hash_key: str, timeout: float) -> list[ClientRecord]:
        """Every live registered bus."""
        self._check()
        with self._broker.lock:
            live = self._broker.registry(zset_key).live()
            return [
                ClientRecord(client_id=member, info=info, expires_at=expiry)
                for member, (expiry, info) in sorted(live.items())
            ]


class MemoryGroupStore:
    """The :class:`~eventbus._transports.base.GroupStore` on a :class:`MemoryBroker`'s
    :class:`~eventbus._transports.memory.streams.MemoryStreams` (timeouts are unused:
    nothing here waits for a server).

    Args:
        broker: where the streams live.
        check: raises unless the transport is started (routing needs it).
    """

    def __init__(self, broker: MemoryBroker, check: Callable[[], None]) -> None:
        self._broker = broker
        self._check = check

    def route(
        self, channel: str, payload: bytes, targets: Sequence[StreamTarget], timeout: float
    ) -> int:
        """Deliver one message and append it to the target streams."""
        self._check()
        return self._broker.publish(channel, payload, targets)

    def route_many(
        self,
        messages: Sequence[tuple[str, bytes, Sequence[StreamTarget]]],
        timeout: float,
    ) -> list[int]:
        """:meth:`route` for several messages, in order."""
        self._check()
        return [self._broker.publish(ch, data, targets) for ch, data, targets in messages]

    def group_create(self, stream: str, group: str, start: str, timeout: float) -> bool:
        """Create a consumer group (and its stream)."""
        return self._broker.streams.group_create(stream, group, start)

    def group_read(
        self, stream: str, group: str, consumer: str, count: int, block: float
    ) -> list[StreamEntry]:
        """New entries for ``consumer``, waiting up to ``block`` seconds."""
        return self._broker.streams.group_read(stream, group, consumer, count, block)

    def group_ack(self, stream: str, group: str, ids: Sequence[str], timeout: float) -> int:
        """Acknowledge entries."""
        return self._broker.streams.group_ack(stream, group, ids)

    def group_claim(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle: float,
        count: int,
        timeout: float,
        exclude: Sequence[str] = (),
    ) -> tuple[list[StreamEntry], list[str]]:
        """Take over idle entries (not those in ``exclude``); report trimmed ones."""
        return self._broker.streams.group_claim(stream, group, consumer, min_idle, count, exclude)

    def dead_letter(
        self,
        stream: str,
        group: str,
        dlq: str,
        entry: StreamEntry,
        consumer: str,
        error: str,
        timeout: float,
    ) -> bool:
        """Move an entry to the dead-letter stream; False if another consumer owns it."""
        return self._broker.streams.dead_letter(stream, group, dlq, entry, consumer, error)

    def group_take_lost(self, stream: str, group: str, timeout: float) -> int | None:
        """Entries trimmed before the group read them, since the last call."""
        return self._broker.streams.group_take_lost(stream, group)

    def group_info(self, stream: str, group: str, dlq: str, timeout: float) -> GroupInfo:
        """The group's backlog, pending entries and dead letters."""
        return self._broker.streams.group_info(stream, group, dlq)

    def dead_letters(self, dlq: str, count: int, timeout: float) -> list[DeadLetter]:
        """The oldest dead letters."""
        return self._broker.streams.dead_letters(dlq, count)

    def replay(self, dlq: str, stream: str, ids: Sequence[str] | None, timeout: float) -> int:
        """Move dead letters back to the group stream."""
        return self._broker.streams.replay(dlq, stream, ids)

    def purge(self, dlq: str, timeout: float) -> int:
        """Delete every dead letter."""
        return self._broker.streams.purge(dlq)

    def registry_set(self, key: str, group: str, spec: bytes, timeout: float) -> None:
        """Record a group in the registry."""
        self._broker.streams.registry_set(key, group, spec)

    def registry_all(self, key: str, timeout: float) -> dict[str, bytes]:
        """Every registered group."""
        return self._broker.streams.registry_all(key)


os.register_at_fork(after_in_child=_reset_brokers_after_fork)
