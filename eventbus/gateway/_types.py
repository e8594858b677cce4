"""What the gateway's plug-ins see of a node: the :class:`GatewayHost` protocol.

The ``/service`` namespace (:mod:`eventbus.gateway.services`) and the dashboard
(:mod:`eventbus.gateway.dashboard`) are built on a gateway node without importing it:
they are typed against this protocol, which :class:`~eventbus.gateway.Gateway`
implements, so the node imports its plug-ins and never the other way round. The
records of the node's browser sockets (:class:`SocketState`) and the naming of their
Socket.IO rooms live here too, since both sides read them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import redis.asyncio as aioredis
import socketio

from eventbus._core.keyspace import Keyspace
from eventbus._core.stats import Counters
from eventbus.gateway._auth import Claims, TokenVerifier
from eventbus.gateway._config import GatewayConfig

__all__ = ["SIO_ROOM_PREFIX", "GatewayHost", "Hook", "SocketState", "sio_room"]

#: Prefix of the python-socketio rooms that hold eventbus rooms (see :func:`sio_room`).
SIO_ROOM_PREFIX = "room:"

#: An async hook a plug-in adds to ``on_startup`` or ``on_shutdown``.
Hook = Callable[[], Awaitable[None]]


def sio_room(room: str) -> str:
    """The python-socketio room of eventbus room ``room``.

    Prefixed, so that no room a token may join can be named like a socket's sid
    (python-socketio puts each socket in a room named by its sid, where the gateway's
    private emits go).
    """
    return SIO_ROOM_PREFIX + room


@attrs.define(kw_only=True, eq=False)
class SocketState:
    """One browser socket on this node."""

    sid: str
    claims: Claims
    ip: str
    connected_at: float
    rooms: set[str] = attrs.field(factory=set)  # joined rooms, besides the user room
    expiry: asyncio.TimerHandle | None = None

    @property
    def user(self) -> str:
        """The user id (``sub``)."""
        return self.claims.sub


class GatewayHost(Protocol):
    """The gateway node as its plug-ins use it (:class:`~eventbus.gateway.Gateway`).

    Attributes:
        config: the node's :class:`~eventbus.gateway.GatewayConfig`.
        keys: the :class:`~eventbus._core.keyspace.Keyspace` of the configured prefix.
        redis: the command client (never for subscriptions: each subscriber opens
            its own connection, see :mod:`eventbus.gateway._redis`).
        sio: the ``socketio.AsyncServer``.
        verifier: the :class:`~eventbus.gateway.TokenVerifier` of the node's keys.
        counters: the node's counters (in its client record and on the dashboard).
        node_id: this node's id in the clients registry.
    """

    config: GatewayConfig
    keys: Keyspace
    redis: aioredis.Redis
    sio: socketio.AsyncServer
    verifier: TokenVerifier
    counters: Counters
    node_id: str

    @property
    def sockets(self) -> Mapping[str, SocketState]:
        """This node's browser sockets by sid."""
        ...

    @property
    def on_startup(self) -> list[Hook]:
        """Hooks run after the node started (plug-ins append theirs)."""
        ...

    @property
    def on_shutdown(self) -> list[Hook]:
        """Hooks run, last added first, before the node stops."""
        ...

    def stats(self) -> dict[str, Any]:
        """Counters and gauges of this node."""
        ...

    def check_rate(self, environ: dict[str, Any]) -> None:
        """Refuse a connection over the per-IP rate (raises ``ConnectionRefusedError``)."""
        ...
