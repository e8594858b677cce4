"""The interface between the bus and a transport (memory, Redis, the gateway).

The bus never names a concrete transport: it builds one from a URL
(:func:`eventbus._transports.create_transport`) and talks to it only through the
three capabilities defined here, each as narrow as its callers need:

* :class:`Transport`, pub/sub plus liveness: what every transport does and what the
  publish path and the listener need. The transport delivers every message it
  receives, from its own listener thread, to the :class:`MessageSink` given to
  :meth:`Transport.start`.
* :class:`PresenceStore` (``transport.presence``): room members and the registry of
  live buses, expiring records the heartbeat refreshes.
* :class:`GroupStore` (``transport.groups``): the streams behind durable groups; an
  optional capability, None where the transport has none (the ``http(s)://``
  gateway), and the bus refuses a group subscription there.

A transport moves opaque bytes on named channels and keys; everything about events
(encoding, matching, filtering, dispatch) stays in the bus. Channels and keys are
full names built by :class:`eventbus._core.keyspace.Keyspace`, prefix included.

What a transport hides behind these protocols is its own business: how many
connections it keeps, to which servers, and how it follows a server that moves. A
Redis Sentinel or Cluster topology is another implementation of the same three
protocols (see :mod:`eventbus._transports.redis`), never a change to the bus.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

from eventbus._models import DeadLetter, GroupInfo

__all__ = [
    "ClientRecord",
    "GroupStore",
    "LinkEvent",
    "LinkState",
    "MessageSink",
    "PresenceStore",
    "StreamEntry",
    "StreamTarget",
    "Transport",
    "TransportState",
]


class TransportState(enum.Enum):
    """Where a transport is in its life: ``NEW`` -> ``STARTED`` -> ``STOPPED``.

    A transport is started once and stopped once; a stopped one is not started again
    (the bus makes a new transport for each connection). The values are the words
    error messages use (``"the Redis transport is stopped"``).
    """

    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class LinkState(enum.Enum):
    """What happened to a transport's subscription link."""

    #: The listener lost its connection; messages published meanwhile are lost.
    DISCONNECTED = "disconnected"
    #: The listener is connected again and every subscription was renewed.
    RECONNECTED = "reconnected"


@attrs.frozen(kw_only=True)
class LinkEvent:
    """A change of the listener's link, reported to :meth:`MessageSink.on_link`.

    Attributes:
        state: what happened.
        reason: a short human-readable cause (``"connection reset"``...).
        error: the exception behind it, if any.
    """

    state: LinkState
    reason: str
    error: BaseException | None = None


@attrs.frozen(kw_only=True)
class ClientRecord:
    """One live bus as registered by its heartbeat (for ``eventbus stats``).

    Attributes:
        client_id: ``<service_name>:<host>:<pid>:<n>``.
        info: the JSON document the bus last wrote (service, started, counters...).
        expires_at: epoch seconds after which the record is stale.
    """

    client_id: str
    info: bytes
    expires_at: float


class MessageSink(Protocol):
    """What a transport reports to; implemented by the bus.

    Both methods are called from the transport's listener thread(s) and must not
    block: the bus only decodes, matches and enqueues there. :meth:`on_message` is never
    called concurrently with itself: a transport with several connections (one per
    Cluster node) serves them all from one listener thread, or otherwise hands the sink
    one message at a time.
    """

    def on_message(self, key: str, channel: str, payload: bytes) -> None:
        """Take one message.

        Args:
            key: the pattern (for :meth:`Transport.psubscribe`) or channel (for
                :meth:`Transport.subscribe`) through which it arrived, exactly as the
                bus passed it; a message matching two patterns arrives once per pattern.
            channel: the channel it was published on.
            payload: the raw bytes, undecoded.
        """

    def on_link(self, event: LinkEvent) -> None:
        """Take a change of the listener's link (lost, renewed)."""


class PresenceStore(Protocol):
    """Room members and the client registry: expiring records, refreshed by the
    heartbeat and pruned when read.

    Each record set is a sorted set of members (by expiry) plus a hash of their info
    documents, named by :class:`eventbus._core.keyspace.Keyspace` (both keys share a
    hash tag). Thread-safety and errors as for :class:`Transport`.
    """

    def presence_set(
        self, zset_key: str, hash_key: str, member: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Add or refresh ``member`` in a room for ``ttl`` seconds, with its ``info``."""

    def presence_remove(self, zset_key: str, hash_key: str, member: str, timeout: float) -> None:
        """Remove ``member`` from a room now."""

    def presence_members(self, zset_key: str, hash_key: str, timeout: float) -> list[str]:
        """Live members of a room, expired ones pruned; sorted, each once."""

    def client_set(
        self, zset_key: str, hash_key: str, client_id: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Register or refresh a live bus for ``ttl`` seconds, with its ``info``."""

    def client_remove(self, zset_key: str, hash_key: str, client_id: str, timeout: float) -> None:
        """Remove a bus's registration now."""

    def client_list(self, zset_key: str, hash_key: str, timeout: float) -> list[ClientRecord]:
        """Every live registered bus, expired ones pruned."""


@runtime_checkable
class Transport(Protocol):
    """A pub/sub link with a listener thread; one per bus.

    Thread-safety: every method may be called from any thread, concurrently, except
    that :meth:`start` and :meth:`stop` are called once each by the bus.
    Errors: methods raise :class:`~eventbus.TransportError` subclasses wrapping the
    underlying library's error (``raise ... from``), never that error itself.
    """

    #: URL scheme(s) this transport serves, for messages and ``health_check``.
    name: str

    @property
    def presence(self) -> PresenceStore:
        """Room members and the client registry, on the same server(s)."""

    @property
    def groups(self) -> GroupStore | None:
        """The streams behind durable groups, or None if this transport has none."""

    def start(self, sink: MessageSink) -> None:
        """Connect, start the listener thread, and deliver messages to ``sink``.

        Raises:
            TransportConnectionError: the server cannot be reached.
        """

    def stop(self, timeout: float) -> None:
        """Stop the listener (joining it within ``timeout``) and close connections."""

    def publish(self, channel: str, payload: bytes, timeout: float) -> int | None:
        """Send one message; return how many subscriptions received it, or None where
        the server cannot count them (sharded pub/sub on a Cluster counts one node's).

        Raises:
            PublishTimeoutError: no answer within ``timeout`` seconds.
            TransportConnectionError: the server cannot be reached.
        """

    def publish_many(
        self, messages: Sequence[tuple[str, bytes]], timeout: float
    ) -> Sequence[int | None]:
        """Send several messages in order in one round trip (where the server allows);
        receivers per message, as :meth:`publish` counts them."""

    def subscribe(self, channels: Sequence[str], timeout: float) -> None:
        """Subscribe to exact channels; returns once the server confirmed them."""

    def unsubscribe(self, channels: Sequence[str], timeout: float) -> None:
        """Drop exact channels; returns once the server confirmed."""

    def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """Subscribe to glob patterns (Redis ``PSUBSCRIBE`` semantics); returns once
        the server confirmed them."""

    def punsubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """Drop glob patterns; returns once the server confirmed."""

    def ping(self, timeout: float) -> float:
        """Round-trip the server; return the latency in seconds."""

    def listener_alive(self) -> bool:
        """Whether the listener thread is running."""

    def link_up(self) -> bool:
        """Whether the listener's link works now (False while it reconnects)."""


# -- durable groups (Redis Streams) -------------------------------------------------------


@attrs.frozen(kw_only=True)
class StreamTarget:
    """A group stream a publish routes a copy into.

    Attributes:
        stream: the stream key (``{p}group:{G}``).
        maxlen: keep about this many entries (``XADD ... MAXLEN ~``); None = unbounded.
    """

    stream: str
    maxlen: int | None = None


@attrs.frozen(kw_only=True)
class StreamEntry:
    """One entry of a group stream as a consumer gets it.

    Attributes:
        id: the stream entry id (``<ms>-<seq>``).
        payload: the envelope, as published.
        deliveries: how many times the group delivered it, this time included.
    """

    id: str
    payload: bytes
    deliveries: int


class GroupStore(Protocol):
    """Stream operations behind durable groups: ``transport.groups`` of a transport
    that has them.

    A group ``G`` has a stream (one entry per routed event), a consumer group of the
    same name on it, and a dead-letter stream. Keys come from
    :class:`eventbus._core.keyspace.Keyspace`. Errors are :class:`~eventbus.TransportError`
    subclasses, as for :class:`Transport`.
    """

    def route(
        self, channel: str, payload: bytes, targets: Sequence[StreamTarget], timeout: float
    ) -> int | None:
        """PUBLISH ``payload`` on ``channel`` and append it to every target stream, in
        one round trip where they share a server; return the receivers, as
        :meth:`Transport.publish` counts them."""

    def route_many(
        self,
        messages: Sequence[tuple[str, bytes, Sequence[StreamTarget]]],
        timeout: float,
    ) -> Sequence[int | None]:
        """:meth:`route` for several messages, in order, in one round trip where they
        share a server."""

    def group_create(self, stream: str, group: str, start: str, timeout: float) -> bool:
        """Create the consumer group (and the stream if missing); False if it existed.

        ``start`` is ``"$"`` (new entries only) or an entry id / ``"<ms>-0"``.
        """

    def group_read(
        self, stream: str, group: str, consumer: str, count: int, block: float
    ) -> list[StreamEntry]:
        """Up to ``count`` entries never delivered to the group, waiting up to ``block``
        seconds for the first; each is now pending for ``consumer``.

        Raises:
            GroupMissingError: the stream or the consumer group does not exist (the
                server lost it); the caller recreates it.
        """

    def group_ack(self, stream: str, group: str, ids: Sequence[str], timeout: float) -> int:
        """Acknowledge entries; return how many were pending."""

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
        """Take over up to ``count`` entries pending for over ``min_idle`` seconds with
        any consumer (a dead one's), except the ids in ``exclude`` (still running here);
        return them (deliveries counted) and the ids of pending entries whose data is
        gone (trimmed), which are acknowledged."""

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
        """Move ``entry`` to the dead-letter stream and acknowledge it, atomically.

        Returns False, moving nothing, when the entry is no longer pending for
        ``consumer`` (another consumer claimed it, or it was acknowledged).
        """

    def group_take_lost(self, stream: str, group: str, timeout: float) -> int | None:
        """Entries retention trimmed from the stream before the group read them, since
        the last call by any process: counted and marked counted atomically, so each
        loss is returned once. 0 when the stream or group does not exist; None when
        the server cannot count (then counting starts now)."""

    def group_info(self, stream: str, group: str, dlq: str, timeout: float) -> GroupInfo:
        """The group's backlog, pending entries, consumers and dead letters."""

    def dead_letters(self, dlq: str, count: int, timeout: float) -> list[DeadLetter]:
        """The oldest ``count`` dead letters."""

    def replay(self, dlq: str, stream: str, ids: Sequence[str] | None, timeout: float) -> int:
        """Append dead letters (all, or those ``ids``) to the group stream again and
        remove them from the dead-letter stream; return how many."""

    def purge(self, dlq: str, timeout: float) -> int:
        """Delete every dead letter; return how many there were."""

    def registry_set(self, key: str, group: str, spec: bytes, timeout: float) -> None:
        """Record group ``group`` in the registry hash with its ``spec`` (JSON)."""

    def registry_all(self, key: str, timeout: float) -> dict[str, bytes]:
        """Every registered group and its spec."""
