"""The relay: room, user and broadcast channels of Redis, emitted to this node's sockets.

Each node ``PSUBSCRIBE``\\ s ``{p}room:*`` and ``SUBSCRIBE``\\ s ``{p}broadcast`` on its own
Redis connection and emits each message only to its own sockets; there is no
Socket.IO message queue between nodes, so several nodes never deliver one event
twice, and no sticky sessions are needed (WebSocket only). A socket receives an
event named by the event type with one argument: the envelope (the CloudEvents JSON
exactly as published), decoded.

A lost Redis link is retried with capped backoff; the messages published meanwhile
are lost for these sockets (pub/sub is at-most-once) and counted as ``relay_gaps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import escape_glob
from eventbus._core.stats import Counters

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
    """One Redis subscription per node, fanned out to the node's sockets."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keyspace,
        *,
        emit: Emit,
        has_room: HasRoom,
        counters: Counters,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._emit = emit
        self._has_room = has_room
        self._counters = counters
        self._room_pattern = escape_glob(keys.prefix) + "room:*"
        self._room_head = keys.room_channel("")
        self._broadcast = keys.broadcast_channel
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        #: Called for every relayed message (the dashboard's live tail); errors are logged.
        self.observers: list[Observer] = []
        self._warned: set[str] = set()

    @property
    def ready(self) -> bool:
        """Whether the subscription is live now."""
        return self._ready.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Start relaying; return once the subscription is confirmed.

        Raises:
            TimeoutError: Redis did not confirm within ``timeout`` (the relay keeps
                trying in the background).
        """
        self._task = asyncio.get_running_loop().create_task(self._run(), name="gateway-relay")
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        """Stop relaying."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = 0.1
        connected_once = False
        while not self._stopping:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.psubscribe(self._room_pattern)
                await pubsub.subscribe(self._broadcast)
                confirmed = 0
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        if confirmed >= 2:
                            await pubsub.ping()
                        continue
                    kind = message["type"]
                    if kind in ("subscribe", "psubscribe"):
                        confirmed += 1
                        if confirmed == 2:
                            if connected_once:
                                log.info("relay subscription renewed")
                            connected_once = True
                            self._ready.set()
                            delay = 0.1
                        continue
                    if kind in ("message", "pmessage"):
                        await self._deliver(message)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as exc:
                self._ready.clear()
                self._counters.add("relay_reconnects")
                if connected_once:
                    self._counters.add("relay_gaps")
                log.warning("relay lost its Redis subscription (%s); retrying in %.1fs", exc, delay)
            except Exception:
                self._ready.clear()
                self._counters.add("errors")
                log.exception("relay failed; restarting it in %.1fs", delay)
            finally:
                try:
                    await asyncio.shield(pubsub.aclose())
                except Exception:  # the link is already broken: nothing to close cleanly
                    log.debug("closing the relay's pubsub failed", exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _deliver(self, message: dict[str, Any]) -> None:
        channel = _text(message["channel"])
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


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
