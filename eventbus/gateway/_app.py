"""The gateway: a Socket.IO server (python-socketio under uvicorn) in front of the bus's Redis.

:func:`build_app` returns the :class:`Gateway` and the ASGI app; :func:`serve` runs it
with uvicorn until SIGINT/SIGTERM. The browser protocol, on the default namespace
``/``:

- connect with ``auth: {token}``; a refusal is a ``connect_error`` whose ``message``
  is ``unauthorized``, ``token_expired`` or ``rate_limited`` (``data.code`` too);
- the socket is in room ``user:<sub>`` at once (and in its presence);
- ``join`` / ``leave`` with ``{"room": R}`` (or ``R``) answer ``{"ok": true}`` or
  ``{"ok": false, "error": CODE}`` through the acknowledgement;
- events arrive named by their type, with the envelope as their one argument;
- at the token's ``exp`` the server emits ``error`` ``{code: "token_expired"}`` and
  disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import engineio.packet
import redis.asyncio as aioredis
import redis.exceptions
import socketio
import socketio.packet

from eventbus._core.keyspace import Keyspace
from eventbus._core.stats import Counters
from eventbus.gateway._auth import AuthError, Claims, TokenVerifier
from eventbus.gateway._config import GatewayConfig
from eventbus.gateway._limits import ConnectRateLimiter, payload_size
from eventbus.gateway._presence import LocalRooms, PresenceStore
from eventbus.gateway._redis import command_client
from eventbus.gateway._relay import Relay
from eventbus.gateway._rooms import RoomRequestError, decide, parse_room_request
from eventbus.gateway._types import Hook, SocketState, sio_room
from eventbus.gateway.dashboard import install as install_dashboard
from eventbus.gateway.services import install as install_services

__all__ = ["Gateway", "build_app", "client_ip"]

log = logging.getLogger("eventbus.gateway")

_HOST = socket.gethostname()
NAMESPACE = "/"


def client_ip(environ: dict[str, Any]) -> str:
    """The peer address of a connection (uvicorn applies trusted proxy headers to it)."""
    scope = environ.get("asgi.scope") or {}
    client = scope.get("client")
    if client:
        return str(client[0])
    return str(environ.get("REMOTE_ADDR", "unknown"))


def _ack(error: str | None = None) -> dict[str, Any]:
    return {"ok": True} if error is None else {"ok": False, "error": error}


class Gateway:
    """One gateway node: the Socket.IO server, its Redis, the relay and presence.

    Built by :func:`build_app`; started and stopped by the ASGI lifespan (uvicorn).
    Plug-ins (``services.install``, ``dashboard.install``) see it as a
    :class:`~eventbus.gateway._types.GatewayHost` and use:

    Attributes:
        config: the :class:`GatewayConfig`.
        sio: the ``socketio.AsyncServer`` (WebSocket only).
        redis: a ``redis.asyncio.Redis`` for commands (not for subscriptions).
        keys: the :class:`~eventbus._core.keyspace.Keyspace` of the configured prefix.
        verifier: the :class:`TokenVerifier`.
        counters: named counters (``connections``, ``refused.<code>``, ``malformed``,
            ``relayed``...), see :meth:`stats`.
        node_id: this node's id in the clients registry.
        sockets: this node's browser sockets by sid.
        relay: the :class:`Relay` (add observers to see every relayed message).
        on_startup, on_shutdown: async hooks run after the gateway starts / before it
            stops.
        describe_hooks: functions adding entries to this node's client record.
    """

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.keys = Keyspace(prefix=config.prefix)
        self.verifier = TokenVerifier(config.keys, audience=config.audience)
        self.counters = Counters()
        self.node_id = f"{config.service_name}:{_HOST}:{os.getpid()}:{config.port}"
        self.started_at = time.time()
        self.redis: aioredis.Redis = command_client(
            config.redis_config, client_name=f"{config.service_name}-gateway"
        )
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            transports=["websocket"],
            cors_allowed_origins=config.cors_allowed_origins,
            max_http_buffer_size=config.hard_payload_limit,
            logger=False,
            engineio_logger=False,
        )
        self.sockets: dict[str, SocketState] = {}
        self.local_rooms = LocalRooms()
        self.presence = PresenceStore(
            self.redis, self.keys, node_id=self.node_id, ttl=config.presence_ttl
        )
        self.limiter = ConnectRateLimiter(rate=config.connect_rate, burst=config.connect_burst)
        self.relay = Relay(
            config.redis_config,
            self.keys,
            client_name=f"{self.node_id}:relay",
            emit=self._emit,
            has_room=self._has_room,
            counters=self.counters,
        )
        self.on_startup: list[Hook] = []
        self.on_shutdown: list[Hook] = []
        self.describe_hooks: list[Callable[[dict[str, Any]], None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._started = self._stopped = False
        self._register_handlers()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Redis, start the relay and the heartbeat, register this node.

        Raises:
            redis.exceptions.RedisError, TimeoutError: Redis is unreachable.
        """
        if self._started:
            return
        await self.redis.ping()
        self._started = True
        await self.relay.start()
        await self._beat()
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name="gateway-heartbeat"
        )
        for hook in self.on_startup:
            await hook()
        log.info("gateway %s relaying %s", self.node_id, self.keys.room_channel("*"))

    async def stop(self) -> None:
        """Remove this node's presence and record, stop its tasks (once; later calls do nothing)."""
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            await self.redis.aclose()
            return
        for hook in reversed(self.on_shutdown):
            try:
                await hook()
            except Exception:
                log.exception("a gateway shutdown hook failed")
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.relay.stop()
        for state in list(self.sockets.values()):
            if state.expiry is not None:
                state.expiry.cancel()
        try:
            await self.presence.exit_all(self.local_rooms.pairs())
            await self.presence.unregister()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("could not remove this gateway's presence: %s", exc)
        await self.redis.aclose()

    def stats(self) -> dict[str, Any]:
        """Counters and gauges of this node (also in its client record)."""
        snap: dict[str, Any] = dict(self.counters.snapshot())
        snap.update(
            sockets=len(self.sockets),
            rooms=len(self.local_rooms),
            uptime=round(time.time() - self.started_at, 3),
            relay_ready=self.relay.ready,
        )
        return snap

    def describe(self) -> dict[str, Any]:
        """This node's client record (the shape ``EventBus.get_clients`` reads)."""
        doc: dict[str, Any] = {
            "client_id": self.node_id,
            "kind": "gateway",
            "service": self.config.service_name,
            "host": _HOST,
            "pid": os.getpid(),
            "transport": f"socketio://{self.config.host}:{self.config.port}",
            "subscriptions": [self.keys.room_channel("*"), self.keys.broadcast_channel],
            "rooms": [],
            "stats": self.stats(),
        }
        for hook in self.describe_hooks:
            try:
                hook(doc)
            except Exception:
                self.counters.add("errors")
                log.exception("a describe hook failed")
        return doc

    async def _beat(self) -> None:
        await self.presence.register(self.describe())
        # Small pipelines: building and reading one runs without a break on the event
        # loop (and as Lua scripts on Redis), so 500 at once delayed the relay's next
        # fan-out by tens of milliseconds every heartbeat with 1,000 sockets.
        await self.presence.refresh(self.local_rooms.pairs(), chunk=100)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as exc:
                self.counters.add("heartbeat_errors")
                log.warning("gateway heartbeat failed: %s", exc)
            except Exception:
                self.counters.add("heartbeat_errors")
                log.exception("gateway heartbeat failed")

    # -- relay -------------------------------------------------------------------------------

    def _has_room(self, room: str) -> bool:
        rooms = self.sio.manager.rooms.get(NAMESPACE)
        return bool(rooms and rooms.get(sio_room(room)))

    async def _emit(self, event: str, envelope: dict[str, Any], room: str | None) -> None:
        """Send one event to this node's sockets in ``room`` (every socket if None).

        The Socket.IO EVENT packet is encoded once and the same Engine.IO frame (its
        encoding cached by engineio) is queued for every recipient, one after the other:
        python-socketio's ``emit`` would create and await one task per recipient, which
        dominated the cost of a fan-out to a large room. Each socket's own writer sends
        it in order with the socket's other packets, as ``emit`` does.
        """
        if NAMESPACE not in self.sio.manager.rooms:
            return
        encoded = self.sio.packet_class(
            socketio.packet.EVENT, namespace=NAMESPACE, data=[event, envelope]
        ).encode()
        target = None if room is None else sio_room(room)
        if isinstance(encoded, list):  # binary attachments: never for a JSON envelope
            await self.sio.emit(event, envelope, to=target, namespace=NAMESPACE)
            return
        frame = engineio.packet.Packet(engineio.packet.MESSAGE, encoded)
        frame.encode()  # cache the encoding once for every recipient's writer
        send = self.sio.eio.send_packet
        for _sid, eio_sid in self.sio.manager.get_participants(NAMESPACE, target):
            await send(eio_sid, frame)

    # -- Socket.IO handlers ------------------------------------------------------------------

    def _register_handlers(self) -> None:
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("join", self._on_join, namespace=NAMESPACE)
        self.sio.on("leave", self._on_leave, namespace=NAMESPACE)
        self.sio.on("*", self._on_other, namespace=NAMESPACE)

    def refuse(self, code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
        """Count a refused connection and build the error that refuses it."""
        self.counters.add("refused")
        self.counters.add(f"refused.{code}")
        return socketio.exceptions.ConnectionRefusedError(code, {"code": code, "message": message})

    def check_rate(self, environ: dict[str, Any]) -> None:
        """Refuse a connection over the per-IP rate (also for other namespaces).

        Raises:
            socketio.exceptions.ConnectionRefusedError: ``rate_limited``.
        """
        if not self.limiter.allow(client_ip(environ)):
            raise self.refuse("rate_limited", "too many connections from this address")

    def check_token(self, auth: Any) -> Claims:
        """The claims of the token in a connect's ``auth`` payload.

        Raises:
            socketio.exceptions.ConnectionRefusedError: ``unauthorized`` or
                ``token_expired``.
        """
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            return self.verifier.verify(token)
        except AuthError as exc:
            raise self.refuse(exc.code, exc.message) from None

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        try:
            self.check_rate(environ)
            claims = self.check_token(auth)
            if claims.service is not None:
                raise self.refuse(
                    "unauthorized", "service tokens connect to the /service namespace"
                )
            remaining = claims.seconds_left()
            if remaining <= 0:
                raise self.refuse("token_expired", "the token has expired")
        except socketio.exceptions.ConnectionRefusedError:
            raise
        except Exception:
            self.counters.add("errors")
            log.exception("connect handler failed")
            raise self.refuse("internal", "the gateway failed to accept the connection") from None
        state = SocketState(sid=sid, claims=claims, ip=client_ip(environ), connected_at=time.time())
        loop = asyncio.get_running_loop()
        state.expiry = loop.call_later(remaining, self._expire_soon, sid)
        self.sockets[sid] = state
        await self.sio.enter_room(sid, sio_room(claims.user_room), namespace=NAMESPACE)
        await self._enter(state, claims.user_room)
        self.counters.add("connections")
        return True

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        state = self.sockets.pop(sid, None)
        if state is None:
            return
        if state.expiry is not None:
            state.expiry.cancel()
        for room in [state.claims.user_room, *state.rooms]:
            await self._exit(state, room)
        self.counters.add("disconnections")

    def _expire_soon(self, sid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._expire(sid))
        task.add_done_callback(_log_failure)

    async def _expire(self, sid: str) -> None:
        if sid not in self.sockets:
            return
        self.counters.add("expired")
        await self.sio.emit(
            "error",
            {"code": "token_expired", "message": "the token has expired"},
            to=sid,
            namespace=NAMESPACE,
        )
        await self.sio.disconnect(sid, namespace=NAMESPACE)

    async def _enter(self, state: SocketState, room: str) -> None:
        if self.local_rooms.add(room, state.user, state.sid):
            try:
                await self.presence.enter(room, state.user)
            except (redis.exceptions.RedisError, OSError) as exc:
                # The heartbeat writes it again within heartbeat_interval.
                self.counters.add("presence_errors")
                log.warning("presence of %s in %s not written yet: %s", state.user, room, exc)

    async def _exit(self, state: SocketState, room: str) -> None:
        if self.local_rooms.discard(room, state.user, state.sid):
            try:
                await self.presence.exit(room, state.user)
            except (redis.exceptions.RedisError, OSError) as exc:
                self.counters.add("presence_errors")
                log.warning("presence of %s in %s not removed (expires): %s", state.user, room, exc)

    def refuse_message(self, code: str) -> dict[str, Any]:
        """Count a refused message (``refused_messages.<code>``) and build its ack."""
        self.counters.add("refused_messages")
        self.counters.add(f"refused_messages.{code}")
        if code in ("malformed", "invalid_room", "payload_too_large", "unknown_event"):
            self.counters.add("malformed")
        return _ack(code)

    def check_payload(self, data: Any) -> str | None:
        """``payload_too_large`` if ``data`` is over ``max_payload``, else None."""
        return "payload_too_large" if payload_size(data) > self.config.max_payload else None

    async def _on_join(self, sid: str, data: Any = None) -> dict[str, Any]:
        return await self._answer("join", self._join, sid, data)

    async def _on_leave(self, sid: str, data: Any = None) -> dict[str, Any]:
        return await self._answer("leave", self._leave, sid, data)

    async def _answer(
        self,
        name: str,
        handler: Callable[[SocketState, str], Awaitable[dict[str, Any]]],
        sid: str,
        data: Any,
    ) -> dict[str, Any]:
        """Run a join or leave of the room ``data`` names; its ack, ``internal`` if it fails."""
        try:
            state = self.sockets.get(sid)
            if state is None:
                return _ack("not_connected")
            too_large = self.check_payload(data)
            if too_large:
                return self.refuse_message(too_large)
            try:
                room = parse_room_request(data)
            except RoomRequestError as exc:
                return self.refuse_message(exc.code)
            return await handler(state, room)
        except Exception:
            self.counters.add("errors")
            log.exception("%s failed", name)
            return _ack("internal")

    async def _join(self, state: SocketState, room: str) -> dict[str, Any]:
        if room == state.claims.user_room or room in state.rooms:
            return _ack()
        try:
            allowed = await decide(state.claims, room, self.config.authorize)
        except Exception:
            self.counters.add("errors")
            log.exception("the authorize policy failed for room %r", room)
            allowed = False
        if not allowed:
            return self.refuse_message("forbidden")
        if len(state.rooms) >= self.config.max_rooms_per_socket:
            return self.refuse_message("too_many_rooms")
        if state.sid not in self.sockets:  # disconnected while the policy ran
            return _ack("not_connected")
        state.rooms.add(room)
        await self.sio.enter_room(state.sid, sio_room(room), namespace=NAMESPACE)
        await self._enter(state, room)
        self.counters.add("joins")
        return _ack()

    async def _leave(self, state: SocketState, room: str) -> dict[str, Any]:
        if room == state.claims.user_room:
            return self.refuse_message("forbidden")
        if room in state.rooms:
            state.rooms.discard(room)
            await self.sio.leave_room(state.sid, sio_room(room), namespace=NAMESPACE)
            await self._exit(state, room)
            self.counters.add("leaves")
        return _ack()

    async def _on_other(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        return self.refuse_message("unknown_event")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("gateway task failed", exc_info=task.exception())


def build_app(config: GatewayConfig) -> tuple[Gateway, Any]:
    """Build the gateway and its ASGI app (Socket.IO, the service namespace, the dashboard).

    Example::

        gateway, app = build_app(GatewayConfig(keys={"k1": secret}))
        uvicorn.run(app, host="127.0.0.1", port=3003)

    Raises:
        ConfigurationError: never here (the config is already valid), but the
            plug-ins may refuse it.
    """
    gateway = Gateway(config)
    install_services(gateway)
    http_app = install_dashboard(gateway)

    async def startup() -> None:
        try:
            await gateway.start()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            log.error("the gateway could not start: Redis: %s", exc)
            raise
        except Exception:
            log.exception("the gateway could not start")
            raise

    app = socketio.ASGIApp(
        gateway.sio, other_asgi_app=http_app, on_startup=startup, on_shutdown=gateway.stop
    )
    return gateway, app
