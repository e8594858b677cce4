"""The relay: room, user and broadcast channels of Redis, emitted to this node's sockets.

Each node ``PSUBSCRIBE``\\ s ``{p}room:*`` and ``SUBSCRIBE``\\ s ``{p}broadcast`` on its own
Redis connection and emits each message only to its own sockets; there is no
Socket.IO message queue between nodes, so several nodes never deliver one event
twice, and no sticky sessions are needed (WebSocket only). A socket receives an
event named by the event type with one argument: the envelope (the CloudEvents JSON
exactly as published), decoded.

The subscription is a :class:`~eventbus.gateway._redis.Subscriber`: each lost link is
logged and counted as ``relay_reconnects`` and renewed with capped backoff; the
messages published meanwhile are lost for these sockets (pub/sub is at-most-once), and
each renewal counts one ``relay_gaps``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.config import RedisConfig
from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import escape_glob
from eventbus._core.stats import Counters
from eventbus.gateway._redis import Message, Subscriber, text

__all__ = ["RESERVED_EVENTS", "Relay"]

log = logging.getLogger("eventbus.gateway.relay")

#: Socket.IO event names a server must not emit (clients treat them as their own).
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
        "error",
        "message",
    }
)

#: ``emit(event_type, envelope, room)`` where ``room`` None means every socket.
Emit = Callable[[str, dict[str, Any], "str | None"], Awaitable[None]]
#: Whether this node has a socket in a room (skip decoding otherwise).
HasRoom = Callable[[str], bool]
#: Observers see every relayed message: (channel, room or None, envelope).
Observer = Callable[[str, "str | None", dict[str, Any]], None]


class Relay:
    """One Redis subscription per node, fanned out to the node's sockets.

    Args:
        config: the Redis to subscribe to.
        keys: the key layout (its room channels and broadcast channel are relayed).
        client_name: the name of the subscription's connection (``CLIENT LIST``).
        emit: sends one event to this node's sockets in a room (or all of them).
        has_room: whether this node has a socket in a room.
        counters: the node's counters (``relayed``, ``relay_*``, ``errors``).
    """

    #: Renewing a lost subscription: at once, then from 0.1 s doubling up to 5 s.
    POLICY = ReconnectPolicy(first=0.1, cap=5.0)

    def __init__(
        self,
        config: RedisConfig,
        keys: Keyspace,
        *,
        client_name: str,
        emit: Emit,
        has_room: HasRoom,
        counters: Counters,
    ) -> None:
        self._emit = emit
        self._has_room = has_room
        self._counters = counters
        self._room_head = keys.room_channel("")
        self._broadcast = keys.broadcast_channel
        room_pattern = escape_glob(keys.prefix) + "room:*"
        self._subscriber = Subscriber(
            config,
            name="relay",
            client_name=client_name,
            counters=counters,
            lost_counter="relay_reconnects",
            policy=self.POLICY,
            names=lambda: ([self._broadcast], [room_pattern]),
            on_message=self._deliver,
            on_up=self._on_up,
            log=log,
        )
        #: Called for every relayed message; errors are logged and counted.
        self.observers: list[Observer] = []
        self._warned: set[str] = set()

    @property
    def ready(self) -> bool:
        """Whether the subscription is live now."""
        return self._subscriber.ready.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Start relaying; return once the subscription is confirmed.

        Raises:
            TimeoutError: Redis did not confirm within ``timeout`` (the relay keeps
                trying in the background).
        """
        self._subscriber.start()
        await asyncio.wait_for(self._subscriber.ready.wait(), timeout)

    async def stop(self) -> None:
        """Stop relaying."""
        await self._subscriber.stop()

    async def _on_up(self, renewed: bool) -> None:
        if renewed:  # what was published while the link was down is lost for the sockets
            self._counters.add("relay_gaps")

    async def _deliver(self, message: Message) -> None:
        channel = text(message["channel"])
        if channel == self._broadcast:
            room: str | None = None
        elif channel.startswith(self._room_head):
            room = channel[len(self._room_head) :]
            if not self._has_room(room) and not self.observers:
                return
        else:  # pragma: no cover - only our two subscriptions exist
            return
        try:
            envelope = json.loads(message["data"])
            event_type = envelope["type"]
            if not isinstance(envelope, dict) or not isinstance(event_type, str):
                raise TypeError("not an envelope")
        except (ValueError, KeyError, TypeError) as exc:
            self._counters.add("relay_malformed")
            self._warn_once("malformed", f"undecodable message on {channel!r}: {exc!r}")
            return
        for observer in list(self.observers):
            try:
                observer(channel, room, envelope)
            except Exception:
                self._counters.add("errors")
                log.exception("relay observer %r failed", observer)
        if room is not None and not self._has_room(room):
            return
        if event_type in RESERVED_EVENTS:
            self._counters.add("relay_reserved_type")
            self._warn_once(
                event_type, f"event type {event_type!r} is a reserved Socket.IO name: not relayed"
            )
            return
        await self._emit(event_type, envelope, room)
        self._counters.add("relayed")

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("%s (logged once per kind)", message)
