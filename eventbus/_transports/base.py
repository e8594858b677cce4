"""The one interface between the bus and a transport (memory, Redis, the gateway).

The bus never names a concrete transport: it builds one from a URL
(:func:`eventbus._transports.create_transport`) and talks to it only through
:class:`Transport`. A transport moves opaque bytes on named channels and keeps
presence and client records; everything about events (encoding, matching,
filtering, dispatch) stays in the bus.

Channels and keys are full names built by :class:`eventbus._layout.Keyspace`,
prefix included. The transport delivers every message it receives, from its own
listener thread, to the :class:`MessageSink` given to :meth:`Transport.start`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "ClientRecord",
    "LinkEvent",
    "LinkState",
    "MessageSink",
    "Transport",
]


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

    Both methods are called from the transport's listener thread and must not block:
    the bus only decodes, matches and enqueues there.
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


@runtime_checkable
class Transport(Protocol):
    """A pub/sub link plus presence storage; one per bus.

    Thread-safety: every method may be called from any thread, concurrently, except
    that :meth:`start` and :meth:`stop` are called once each by the bus.
    Errors: methods raise :class:`~eventbus.TransportError` subclasses wrapping the
    underlying library's error (``raise ... from``), never that error itself.
    """

    #: URL scheme(s) this transport serves, for messages and ``health_check``.
    name: str

    def start(self, sink: MessageSink) -> None:
        """Connect, start the listener thread, and deliver messages to ``sink``.

        Raises:
            TransportConnectionError: the server cannot be reached.
        """

    def stop(self, timeout: float) -> None:
        """Stop the listener (joining it within ``timeout``) and close connections."""

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """Send one message; return how many subscriptions received it.

        Raises:
            PublishTimeoutError: no answer within ``timeout`` seconds.
            TransportConnectionError: the server cannot be reached.
        """

    def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        """Send several messages in order in one round trip; receivers per message."""

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
