"""The ``/service`` Socket.IO namespace: Python buses working through the gateway.

An ``EventBus.from_url("http://gateway:3003", token=...)`` bus uses the ``http(s)://``
transport (:mod:`eventbus._transports.gateway`), which forwards the Redis-level
operations of :class:`eventbus._transports.base.Transport` to this namespace. Here each
one is checked against the ``scopes`` of the service token and carried out on Redis.

Names on the wire are **relative to the key prefix**: the client strips its own prefix
and the gateway adds its own, so a service can never reach keys outside the gateway's
prefix, and both sides need not agree on one. A name is one of:

=================================  =====================================================
``ev:<type>``                      a plain publish channel (scope ``publish:<glob>`` to
                                   publish, ``subscribe:<glob>`` to subscribe)
``ev:<pattern>``                   a PSUBSCRIBE pattern (``subscribe:<glob>`` covering it)
``room:<room>``                    a room or user channel (scope ``rooms:<glob>``)
``broadcast``                      publish: scope ``broadcast``; subscribe: any service
``groups:changed``                 subscribe only, any service (the bus listens to it)
``presence:{<room>}:z`` / ``:h``   a room's presence keys (scope ``presence``; writing
                                   also needs ``rooms:<glob>`` on the room)
``{clients}:z`` / ``:h``           the registry of live buses: any service registers
                                   itself; listing needs ``presence``
=================================  =====================================================

Client -> server events (each answered through the Socket.IO acknowledgement, with
``{"ok": true, ...}`` or ``{"ok": false, "error": code, "message": text}``; codes are
``malformed``, ``forbidden``, ``too_large``, ``unavailable``):

- ``publish`` ``{channel, payload}`` -> ``{ok, receivers}``
- ``publish_many`` ``{messages: [[channel, payload], ...]}`` -> ``{ok, receivers: [...]}``
- ``subscribe`` / ``unsubscribe`` / ``psubscribe`` / ``punsubscribe`` ``{names: [...]}``
  -> ``{ok}`` once Redis confirmed the subscription
- ``presence_set`` ``{zset, hash, member, info, ttl}``, ``presence_remove``
  ``{zset, hash, member}``, ``presence_members`` ``{zset, hash}`` -> ``{ok, members}``
- ``client_set`` ``{zset, hash, member, info, ttl}``, ``client_remove``
  ``{zset, hash, member}``, ``client_list`` ``{zset, hash}`` ->
  ``{ok, clients: [[id, info, expires_at], ...]}``
- ``ping`` -> ``{ok}``

Server -> client events: ``message`` ``{key, channel, payload}`` for each message of one
of the socket's subscriptions (``key`` the pattern or channel it subscribed, relative);
``link`` ``{state: "down" | "up", reason}`` when the gateway's own Redis subscription
was lost and renewed (messages in between are lost: the client reports a gap);
``error`` ``{code, message}`` before the gateway disconnects the socket (token expiry).

One Redis PubSub per gateway serves every service socket: each channel and pattern is
subscribed once, and messages are fanned out to the sockets that asked for them only.
It is a :class:`~eventbus.gateway._redis.Subscriber`: a lost link is logged, counted as
``service_reconnects`` and renewed with backoff, and the sockets hear ``link`` down,
then up. The scope rules and the reading of requests are in
:mod:`eventbus.gateway._scopes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import socketio
from redis.exceptions import RedisError

from eventbus._core.backoff import ReconnectPolicy
from eventbus._transports.redis.lua import MEMBERS_LUA, RECORDS_LUA, SET_LUA
from eventbus.gateway._auth import AuthError, Claims
from eventbus.gateway._redis import CONFIRM_TIMEOUT, Message, Subscriber, text
from eventbus.gateway._scopes import (
    MAX_BATCH,
    RefusedError,
    Scopes,
    ServiceNames,
    bytes_field,
    names_field,
    payload_field,
    text_field,
    ttl_field,
)
from eventbus.gateway._types import GatewayHost

__all__ = ["NAMESPACE", "ServiceNamespace", "install", "snapshot"]

log = logging.getLogger("eventbus.gateway.services")

#: The Socket.IO namespace of service clients.
NAMESPACE: Final = "/service"
#: Renewing the shared subscription: at once, then from 0.1 s doubling up to 2 s.
LINK_POLICY: Final = ReconnectPolicy(first=0.1, cap=2.0)


class _Service:
    """What the namespace knows about one connected service socket."""

    __slots__ = (
        "channels",
        "claims",
        "connected_at",
        "counts",
        "expiry",
        "info",
        "name",
        "patterns",
        "scopes",
        "sid",
    )

    def __init__(self, sid: str, claims: Claims, scopes: Scopes) -> None:
        self.sid = sid
        self.claims = claims
        self.scopes = scopes
        self.name = claims.service or claims.sub
        self.connected_at = time.time()
        self.channels: set[str] = set()  # full names
        self.patterns: set[str] = set()
        self.counts: dict[str, int] = {"published": 0, "delivered": 0, "refused": 0}
        self.info: bytes | None = None  # the bus's last client record (its stats)
        self.expiry: asyncio.TimerHandle | None = None


class ServiceNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The ``/service`` namespace of one gateway; see the module docstring.

    Args:
        gateway: the gateway node (its ``sio``, ``redis``, ``keys``, ``verifier``,
            ``counters``, ``node_id`` and ``config``).
    """

    def __init__(self, gateway: GatewayHost) -> None:
        super().__init__(NAMESPACE)
        self.gateway = gateway
        self.names = ServiceNames(gateway.keys)
        self.max_payload = gateway.config.max_payload
        self.services: dict[str, _Service] = {}
        self._channel_sids: dict[str, set[str]] = {}
        self._pattern_sids: dict[str, set[str]] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._control = gateway.keys.control_channel(f"gateway:{gateway.node_id}:services")
        self._told_down = False  # the sockets heard `link` down and not yet up
        self._subscriber = Subscriber(
            gateway.config.redis_config,
            name="service subscriptions",
            client_name=f"{gateway.node_id}:services",
            counters=gateway.counters,
            lost_counter="service_reconnects",
            policy=LINK_POLICY,
            names=self._subscriptions,
            on_message=self._relay,
            on_confirm=self._confirmed,
            on_up=self._link_up,
            on_down=self._link_down,
            log=log,
        )
        redis_client = gateway.redis
        self._set_script = redis_client.register_script(SET_LUA)
        self._members_script = redis_client.register_script(MEMBERS_LUA)
        self._records_script = redis_client.register_script(RECORDS_LUA)

    # -- bookkeeping -----------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.gateway.counters.add(name, n)

    def snapshot(self) -> list[dict[str, Any]]:
        """The connected services, for the dashboard: name, sid, since, scopes,
        subscriptions, counts, and the bus's own last client record (``info``)."""
        out = []
        for svc in list(self.services.values()):
            info: Any = None
            if svc.info is not None:
                info = svc.info.decode("utf-8", "replace")
            out.append(
                {
                    "name": svc.name,
                    "sid": svc.sid,
                    "connected_at": svc.connected_at,
                    "scopes": svc.scopes.as_list(),
                    "subscriptions": sorted(
                        [self.names.relative(c) for c in svc.channels]
                        + [self.names.relative_pattern(p) for p in svc.patterns]
                    ),
                    "counts": dict(svc.counts),
                    "info": info,
                }
            )
        return out

    # -- connection --------------------------------------------------------------------------

    def _refuse(self, code: str, message: str) -> socketio.exceptions.ConnectionRefusedError:
        self._count("refused")
        return socketio.exceptions.ConnectionRefusedError(code, {"code": code, "message": message})

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Authenticate a service token; refuse with ``unauthorized``/``token_expired``."""
        self.gateway.check_rate(environ)  # raises ConnectionRefusedError("rate_limited")
        token = auth.get("token") if isinstance(auth, dict) else auth
        if not isinstance(token, str) or not token:
            raise self._refuse("unauthorized", "no token in auth")
        try:
            claims = self.gateway.verifier.verify(token)
        except AuthError as exc:
            raise self._refuse(exc.code, exc.message) from None
        except Exception as exc:  # a bug: refused as before, and reported
            self._count("errors")
            log.exception("checking a service token failed")
            raise self._refuse("unauthorized", str(exc)) from None
        if not (claims.scopes or claims.service):
            raise self._refuse("unauthorized", "a service token (with scopes) is required")
        svc = _Service(sid, claims, Scopes(claims.scopes))
        self.services[sid] = svc
        self._subscriber.start()
        loop = asyncio.get_running_loop()
        svc.expiry = loop.call_later(max(0.0, claims.exp - time.time()), self._expire_soon, sid)
        self._count("services_connected")
        log.info("service %s connected (%s)", svc.name, sid)

    def _expire_soon(self, sid: str) -> None:
        asyncio.get_running_loop().create_task(self._expire(sid))

    async def _expire(self, sid: str) -> None:
        if sid not in self.services:
            return
        try:
            with contextlib.suppress(Exception):  # the socket may be gone already
                await self.emit(
                    "error", {"code": "token_expired", "message": "the token expired"}, to=sid
                )
            await self.disconnect(sid)
        except Exception:
            self._count("errors")
            log.exception("disconnecting the expired service socket %s failed", sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Forget the socket and drop the subscriptions nobody else uses."""
        svc = self.services.pop(sid, None)
        if svc is None:
            return
        if svc.expiry is not None:
            svc.expiry.cancel()
        await self._drop(sid, "unsubscribe", list(svc.channels))
        await self._drop(sid, "punsubscribe", list(svc.patterns))
        log.info("service %s disconnected (%s): %s", svc.name, sid, reason)

    # -- dispatch ----------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Run a handler; a refused or malformed request gets ``{ok: false, error}``."""
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        sid = args[0] if args else None
        svc = self.services.get(sid) if isinstance(sid, str) else None
        handler = _HANDLERS.get(event)
        if svc is None:
            return {"ok": False, "error": "unauthorized", "message": "not connected"}
        if handler is None:
            self._count("malformed")
            svc.counts["refused"] += 1
            return {"ok": False, "error": "malformed", "message": f"unknown event {event!r}"}
        data = args[1] if len(args) > 1 else None
        try:
            if not isinstance(data, dict):
                raise RefusedError("malformed", f"{event} takes an object")
            result: dict[str, Any] = await handler(self, svc, data)
        except RefusedError as exc:
            self._count("malformed" if exc.code == "malformed" else "refused")
            svc.counts["refused"] += 1
            return {"ok": False, "error": exc.code, "message": exc.message}
        except RedisError as exc:
            self._count("redis_errors")
            log.warning("service %s: %s failed on Redis: %s", svc.name, event, exc)
            return {"ok": False, "error": "unavailable", "message": f"Redis: {exc}"}
        except Exception as exc:  # never crash the server on one request
            self._count("errors")
            log.exception("service %s: %s failed", svc.name, event)
            return {"ok": False, "error": "internal", "message": repr(exc)}
        return {"ok": True, **result}

    # -- publishing ---------------------------------------------------------------------------

    async def _on_publish(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        channel = self.names.publish_channel(svc.scopes, text_field(data, "channel"))
        payload = payload_field(data.get("payload"), self.max_payload)
        receivers = await self.gateway.redis.publish(channel, payload)
        svc.counts["published"] += 1
        self._count("service_published")
        return {"receivers": int(receivers)}

    async def _on_publish_many(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        messages = data.get("messages")
        if not isinstance(messages, list) or len(messages) > MAX_BATCH:
            raise RefusedError("malformed", f"messages must be a list of at most {MAX_BATCH}")
        batch: list[tuple[str, bytes]] = []
        for item in messages:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise RefusedError("malformed", "each message is [channel, payload]")
            rel = item[0]
            if not isinstance(rel, str) or not rel:
                raise RefusedError("malformed", "channel must be a non-empty string")
            batch.append(
                (
                    self.names.publish_channel(svc.scopes, rel),
                    payload_field(item[1], self.max_payload),
                )
            )
        if not batch:
            return {"receivers": []}
        pipe = self.gateway.redis.pipeline(transaction=False)
        for channel, payload in batch:
            pipe.publish(channel, payload)
        results = await pipe.execute()
        svc.counts["published"] += len(batch)
        self._count("service_published", len(batch))
        return {"receivers": [int(r) for r in results]}

    # -- subscriptions ------------------------------------------------------------------------

    async def _on_subscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self.names.subscribe_channel(svc.scopes, n) for n in names_field(data)]
        await self._add(svc, "subscribe", full)
        return {}

    async def _on_psubscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self.names.subscribe_pattern(svc.scopes, n) for n in names_field(data)]
        await self._add(svc, "psubscribe", full)
        return {}

    async def _on_unsubscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self.names.prefix + n for n in names_field(data)]
        await self._drop(svc.sid, "unsubscribe", full)
        return {}

    async def _on_punsubscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self.names.glob_prefix + n for n in names_field(data)]
        await self._drop(svc.sid, "punsubscribe", full)
        return {}

    async def _add(self, svc: _Service, kind: str, names: Sequence[str]) -> None:
        """Add ``svc`` to each name's sockets; subscribe new names; wait for Redis."""
        table = self._channel_sids if kind == "subscribe" else self._pattern_sids
        mine = svc.channels if kind == "subscribe" else svc.patterns
        loop = asyncio.get_running_loop()
        new: dict[str, asyncio.Future[None]] = {}
        waits: list[asyncio.Future[None]] = []
        for name in names:
            sids = table.setdefault(name, set())
            if not sids:
                future = self._waiting.get((kind, name))
                if future is None or future.done():
                    future = loop.create_future()
                    self._waiting[(kind, name)] = future
                    new[name] = future
            sids.add(svc.sid)
            mine.add(name)
            pending = self._waiting.get((kind, name))
            if pending is not None and not pending.done():
                waits.append(pending)
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                if new:
                    # While the listener (re)subscribes, wait for it: names it did not
                    # take from the tables are sent here, once it is up.
                    await self._subscriber.ready.wait()
                    unsent = [n for n, f in new.items() if not f.done()]
                    if unsent:
                        await self._subscriber.command(kind, unsent)
                if waits:
                    await asyncio.shield(asyncio.gather(*waits))
        except TimeoutError:
            raise RefusedError("unavailable", "Redis did not confirm the subscription") from None

    async def _drop(self, sid: str, kind: str, names: Sequence[str]) -> None:
        """Remove ``sid`` from each name; unsubscribe the names nobody uses any more."""
        table = self._channel_sids if kind == "unsubscribe" else self._pattern_sids
        svc = self.services.get(sid)
        gone: list[str] = []
        for name in names:
            if svc is not None:
                (svc.channels if kind == "unsubscribe" else svc.patterns).discard(name)
            sids = table.get(name)
            if sids is None:
                continue
            sids.discard(sid)
            if not sids:
                del table[name]
                gone.append(name)
        if gone and self._subscriber.ready.is_set():
            try:
                await self._subscriber.command(kind, gone)
            except (RedisError, OSError) as exc:  # the listener renews from the tables
                log.debug("%s failed: %s", kind, exc)

    # -- presence and the client registry -----------------------------------------------------

    async def _on_presence_set(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self.names.presence_keys(svc.scopes, data, write=True)
        await self._store_member(zset, hash_, data)
        return {}

    async def _on_presence_remove(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self.names.presence_keys(svc.scopes, data, write=True)
        await self._remove_member(zset, hash_, text_field(data, "member"))
        return {}

    async def _on_presence_members(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self.names.presence_keys(svc.scopes, data, write=False)
        raw = await self._members_script(keys=[zset, hash_], args=[])
        members = sorted({m.decode() if isinstance(m, bytes) else str(m) for m in raw})
        return {"members": members}

    async def _on_client_set(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self.names.client_keys(data)
        svc.info = await self._store_member(zset, hash_, data)
        return {}

    async def _on_client_remove(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self.names.client_keys(data)
        await self._remove_member(zset, hash_, text_field(data, "member"))
        return {}

    async def _on_client_list(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self.names.client_keys(data)
        if not svc.scopes.presence:
            raise RefusedError("forbidden", "listing clients needs the scope 'presence'")
        raw = await self._records_script(keys=[zset, hash_], args=[])
        clients = []
        for i in range(0, len(raw) - 2, 3):
            member, score, info = raw[i], raw[i + 1], raw[i + 2]
            if info is None:
                continue
            name = member.decode() if isinstance(member, bytes) else str(member)
            clients.append([name, info, float(score) / 1000.0])
        return {"clients": clients}

    async def _store_member(self, zset: str, hash_: str, data: dict[str, Any]) -> bytes:
        member, info, ttl = text_field(data, "member"), bytes_field(data, "info"), ttl_field(data)
        if len(info) > self.max_payload:
            raise RefusedError("too_large", f"info over {self.max_payload} bytes")
        ttl_ms = max(1, int(ttl * 1000))
        await self._set_script(keys=[zset, hash_], args=[member, info, ttl_ms, ttl_ms])
        return info

    async def _remove_member(self, zset: str, hash_: str, member: str) -> None:
        pipe = self.gateway.redis.pipeline(transaction=True)
        pipe.zrem(zset, member)
        pipe.hdel(hash_, member)
        await pipe.execute()

    async def _on_ping(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        await self.gateway.redis.ping()
        return {}

    # -- the shared Redis subscription ---------------------------------------------------------

    async def close(self) -> None:
        """Stop the Redis subscription (the gateway's shutdown calls it)."""
        await self._subscriber.stop()

    def _subscriptions(self) -> tuple[list[str], list[str]]:
        """What a (re)subscription subscribes: the control channel and every name a
        socket uses. Names added while its commands are on their way are sent by their
        own request once the link is up (see :meth:`_add`)."""
        return [self._control, *self._channel_sids], list(self._pattern_sids)

    def _confirmed(self, kind: str, name: str) -> None:
        future = self._waiting.pop((kind, name), None)
        if future is not None and not future.done():
            future.set_result(None)

    async def _relay(self, message: Message) -> None:
        """Fan one message out to the sockets subscribed to its channel or pattern."""
        channel = text(message["channel"])
        if message["type"] == "message":
            sids = self._channel_sids.get(channel)
            rel_key = self.names.relative(channel)
        else:
            pattern = text(message["pattern"])
            sids = self._pattern_sids.get(pattern)
            rel_key = self.names.relative_pattern(pattern)
        if not sids:
            return
        body = {"key": rel_key, "channel": self.names.relative(channel), "payload": message["data"]}
        for sid in list(sids):
            svc = self.services.get(sid)
            if svc is None:
                continue
            svc.counts["delivered"] += 1
            await self.emit("message", body, to=sid)
        self._count("service_relayed", len(sids))

    async def _link_down(self, error: Exception) -> None:
        if not self._told_down:
            self._told_down = True
            await self._announce("down", str(error) or type(error).__name__)

    async def _link_up(self, renewed: bool) -> None:
        if self._told_down:
            self._told_down = False
            await self._announce("up", "subscriptions renewed")

    async def _announce(self, state: str, reason: str) -> None:
        for sid in list(self.services):
            with contextlib.suppress(Exception):  # a socket that is gone hears nothing
                await self.emit("link", {"state": state, "reason": reason}, to=sid)


_Handler = Callable[[ServiceNamespace, _Service, dict[str, Any]], Awaitable[dict[str, Any]]]
_HANDLERS: dict[str, _Handler] = {
    "publish": ServiceNamespace._on_publish,
    "publish_many": ServiceNamespace._on_publish_many,
    "subscribe": ServiceNamespace._on_subscribe,
    "unsubscribe": ServiceNamespace._on_unsubscribe,
    "psubscribe": ServiceNamespace._on_psubscribe,
    "punsubscribe": ServiceNamespace._on_punsubscribe,
    "presence_set": ServiceNamespace._on_presence_set,
    "presence_remove": ServiceNamespace._on_presence_remove,
    "presence_members": ServiceNamespace._on_presence_members,
    "client_set": ServiceNamespace._on_client_set,
    "client_remove": ServiceNamespace._on_client_remove,
    "client_list": ServiceNamespace._on_client_list,
    "ping": ServiceNamespace._on_ping,
}


def install(gateway: GatewayHost) -> ServiceNamespace:
    """Register the ``/service`` namespace on ``gateway.sio``; return it.

    Its Redis subscription starts with the first service socket and stops with the
    gateway (:meth:`ServiceNamespace.close` is added to ``gateway.on_shutdown``).

    Args:
        gateway: the gateway node (:class:`~eventbus.gateway.Gateway`).
    """
    namespace = ServiceNamespace(gateway)
    gateway.sio.register_namespace(namespace)
    gateway.on_shutdown.append(namespace.close)
    return namespace


def snapshot(gateway: GatewayHost) -> list[dict[str, Any]]:
    """The services connected to ``gateway`` now (for the dashboard); ``[]`` if the
    namespace is not installed."""
    namespace = gateway.sio.namespace_handlers.get(NAMESPACE)
    return namespace.snapshot() if isinstance(namespace, ServiceNamespace) else []
