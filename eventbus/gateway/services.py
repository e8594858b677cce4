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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import redis.asyncio as aioredis
import socketio
from redis.exceptions import RedisError

from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import compile_glob, escape_glob
from eventbus._transports.redis.compat import async_client_handshake, async_no_retry
from eventbus._transports.redis.lua import MEMBERS_LUA, RECORDS_LUA, SET_LUA

__all__ = ["NAMESPACE", "ServiceNamespace", "install", "snapshot"]

log = logging.getLogger("eventbus.gateway.services")

#: The Socket.IO namespace of service clients.
NAMESPACE: Final = "/service"
#: How long a subscribe waits for Redis to confirm, seconds.
_CONFIRM_TIMEOUT: Final = 10.0
_POLL: Final = 1.0
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_CAP: Final = 2.0
_DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024
_MAX_BATCH: Final = 1000
_MAX_NAMES: Final = 1000
_GLOB_CHARS: Final = frozenset("*?[\\")


class Refused(Exception):
    """A request refused with a reason code (sent back in the acknowledgement)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _covers(scope: str, pattern: str) -> bool:
    """Whether every text ``pattern`` matches is matched by the glob ``scope`` too.

    Conservative: equal globs, a literal pattern the scope matches, or a scope
    ``<literal>*`` whose literal head the pattern starts with.
    """
    if scope == pattern:
        return True
    if not _GLOB_CHARS.intersection(pattern):
        return compile_glob(scope).matches(pattern)
    head = scope[:-1]
    return scope.endswith("*") and not _GLOB_CHARS.intersection(head) and pattern.startswith(head)


class Scopes:
    """The permissions of one service token, parsed from its ``scopes`` claim.

    ``publish:<glob>`` (event types), ``subscribe:<glob>`` (event types),
    ``rooms:<glob>`` (room names, ``user:<id>`` included), ``broadcast``, ``presence``.
    Unknown scopes are ignored (and logged).
    """

    def __init__(self, scopes: Iterable[str]) -> None:
        self.publish: list[str] = []
        self.subscribe: list[str] = []
        self.rooms: list[str] = []
        self.broadcast = False
        self.presence = False
        for scope in scopes:
            kind, sep, glob = str(scope).partition(":")
            if kind == "publish" and sep and glob:
                self.publish.append(glob)
            elif kind == "subscribe" and sep and glob:
                self.subscribe.append(glob)
            elif kind == "rooms" and sep and glob:
                self.rooms.append(glob)
            elif scope == "broadcast":
                self.broadcast = True
            elif scope == "presence":
                self.presence = True
            else:
                log.debug("ignoring unknown scope %r", scope)

    def may_publish(self, event_type: str) -> bool:
        """Whether ``publish:<glob>`` allows publishing ``event_type``."""
        return any(compile_glob(g).matches(event_type) for g in self.publish)

    def may_subscribe(self, pattern: str) -> bool:
        """Whether some ``subscribe:<glob>`` covers the type pattern ``pattern``."""
        return any(_covers(g, pattern) for g in self.subscribe)

    def may_room(self, room: str) -> bool:
        """Whether ``rooms:<glob>`` allows room ``room``."""
        return any(compile_glob(g).matches(room) for g in self.rooms)

    def as_list(self) -> list[str]:
        """The scopes, normalised (for the dashboard)."""
        out = [f"publish:{g}" for g in self.publish] + [f"subscribe:{g}" for g in self.subscribe]
        out += [f"rooms:{g}" for g in self.rooms]
        return out + ["broadcast"] * self.broadcast + ["presence"] * self.presence


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

    def __init__(self, sid: str, claims: Any, scopes: Scopes) -> None:
        self.sid = sid
        self.claims = claims
        self.scopes = scopes
        service = getattr(claims, "service", None)
        self.name = service if isinstance(service, str) and service else str(claims.sub)
        self.connected_at = time.time()
        self.channels: set[str] = set()  # full names
        self.patterns: set[str] = set()
        self.counts: dict[str, int] = {"published": 0, "delivered": 0, "refused": 0}
        self.info: bytes | None = None  # the bus's last client record (its stats)
        self.expiry: asyncio.TimerHandle | None = None


def _claim(claims: Any, name: str) -> Any:
    value = getattr(claims, name, None)
    if value is None and isinstance(getattr(claims, "raw", None), dict):
        value = claims.raw.get(name)
    return value


def _str(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise Refused("malformed", f"{field} must be a non-empty string")
    return value


def _bytes(data: dict[str, Any], field: str) -> bytes:
    value = data.get(field)
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes | bytearray):
        raise Refused("malformed", f"{field} must be bytes")
    return bytes(value)


def _ttl(data: dict[str, Any]) -> float:
    value = data.get("ttl")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 86400:
        raise Refused("malformed", "ttl must be a number of seconds in (0, 86400]")
    return float(value)


def _names(data: Any) -> list[str]:
    names = data.get("names") if isinstance(data, dict) else None
    if (
        not isinstance(names, list)
        or len(names) > _MAX_NAMES
        or not all(isinstance(n, str) and 0 < len(n) <= 1024 for n in names)
    ):
        raise Refused("malformed", "names must be a list of non-empty strings")
    return list(dict.fromkeys(names))


class ServiceNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """The ``/service`` namespace of one gateway; see the module docstring.

    Args:
        gateway: the :class:`eventbus.gateway.Gateway` (``sio``, ``redis``, ``keys``,
            ``verifier``, ``counters``, ``node_id``, ``config``).
    """

    def __init__(self, gateway: Any) -> None:
        super().__init__(NAMESPACE)
        self.gateway = gateway
        self.keys: Keyspace = gateway.keys
        self.prefix: str = self.keys.prefix
        self.glob_prefix: str = escape_glob(self.prefix)
        limits = getattr(gateway.config, "limits", gateway.config)
        self.max_payload = int(getattr(limits, "max_payload", None) or _DEFAULT_MAX_PAYLOAD)
        self.services: dict[str, _Service] = {}
        self._channel_sids: dict[str, set[str]] = {}
        self._pattern_sids: dict[str, set[str]] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._control = self.keys.control_channel(f"gateway:{gateway.node_id}:services")
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._link_up = False
        self._ready = asyncio.Event()  # set while the Redis subscription works
        self._send_lock: asyncio.Lock | None = None
        redis_client = gateway.redis
        self._set_script = redis_client.register_script(SET_LUA)
        self._members_script = redis_client.register_script(MEMBERS_LUA)
        self._records_script = redis_client.register_script(RECORDS_LUA)

    # -- bookkeeping -----------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        counters = self.gateway.counters
        add = getattr(counters, "add", None)
        if callable(add):
            add(name, n)
        else:
            counters[name] = counters.get(name, 0) + n

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
                        [self._rel(c) for c in svc.channels]
                        + [self._rel_pattern(p) for p in svc.patterns]
                    ),
                    "counts": dict(svc.counts),
                    "info": info,
                }
            )
        return out

    def _rel(self, channel: str) -> str:
        return channel[len(self.prefix) :] if channel.startswith(self.prefix) else channel

    def _rel_pattern(self, pattern: str) -> str:
        head = self.glob_prefix
        return pattern[len(head) :] if pattern.startswith(head) else pattern

    # -- connection --------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Authenticate a service token; refuse with ``unauthorized``/``token_expired``."""
        check_rate = getattr(self.gateway, "check_rate", None)
        if callable(check_rate):
            check_rate(environ)  # raises ConnectionRefusedError("rate_limited")
        token = auth.get("token") if isinstance(auth, dict) else auth
        if not isinstance(token, str) or not token:
            self._count("refused")
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized", {"code": "unauthorized", "message": "no token in auth"}
            )
        try:
            claims = self.gateway.verifier.verify(token)
        except Exception as exc:
            code = getattr(exc, "code", None) or "unauthorized"
            self._count("refused")
            raise socketio.exceptions.ConnectionRefusedError(
                code, {"code": code, "message": str(getattr(exc, "message", exc))}
            ) from None
        scopes = _claim(claims, "scopes")
        if not isinstance(scopes, list | tuple) or not (scopes or _claim(claims, "service")):
            self._count("refused")
            raise socketio.exceptions.ConnectionRefusedError(
                "unauthorized",
                {"code": "unauthorized", "message": "a service token (with scopes) is required"},
            )
        svc = _Service(sid, claims, Scopes(scopes))
        self.services[sid] = svc
        self._ensure_started()
        exp = _claim(claims, "exp")
        if isinstance(exp, int | float):
            loop = asyncio.get_running_loop()
            delay = max(0.0, float(exp) - time.time())
            svc.expiry = loop.call_later(delay, lambda: asyncio.ensure_future(self._expire(sid)))
        self._count("services_connected")
        log.info("service %s connected (%s)", svc.name, sid)

    async def _expire(self, sid: str) -> None:
        if sid not in self.services:
            return
        with contextlib.suppress(Exception):
            await self.emit(
                "error", {"code": "token_expired", "message": "the token expired"}, to=sid
            )
        await self.disconnect(sid)

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
                raise Refused("malformed", f"{event} takes an object")
            result: dict[str, Any] = await handler(self, svc, data)
        except Refused as exc:
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

    # -- name checks --------------------------------------------------------------------------

    def _publish_channel(self, svc: _Service, rel: str) -> str:
        """The full channel for publishing on relative name ``rel``, if allowed."""
        full = self.prefix + rel
        event_type = self.keys.event_type_of(full)
        if event_type is not None:
            if not event_type or not svc.scopes.may_publish(event_type):
                raise Refused("forbidden", f"publishing {event_type!r} is outside the scopes")
            return full
        room = self.keys.room_of(full)
        if room is not None:
            if not room or not svc.scopes.may_room(room):
                raise Refused("forbidden", f"room {room!r} is outside the scopes")
            return full
        if full == self.keys.broadcast_channel:
            if not svc.scopes.broadcast:
                raise Refused("forbidden", "broadcasting needs the scope 'broadcast'")
            return full
        raise Refused("forbidden", f"cannot publish on {rel!r}")

    def _subscribe_channel(self, svc: _Service, rel: str) -> str:
        full = self.prefix + rel
        if full in (self.keys.broadcast_channel, self.keys.groups_channel):
            return full
        event_type = self.keys.event_type_of(full)
        if event_type is not None:
            literal = event_type and not _GLOB_CHARS.intersection(event_type)
            if literal and svc.scopes.may_subscribe(event_type):
                return full
            raise Refused("forbidden", f"subscribing to {event_type!r} is outside the scopes")
        room = self.keys.room_of(full)
        if room is not None:
            if room and svc.scopes.may_room(room):
                return full
            raise Refused("forbidden", f"room {room!r} is outside the scopes")
        raise Refused("forbidden", f"cannot subscribe to {rel!r}")

    def _subscribe_pattern(self, svc: _Service, rel: str) -> str:
        if not rel.startswith("ev:") or len(rel) == 3:
            raise Refused("forbidden", f"cannot psubscribe to {rel!r}")
        if not svc.scopes.may_subscribe(rel[3:]):
            raise Refused("forbidden", f"subscribing to {rel[3:]!r} is outside the scopes")
        return self.glob_prefix + rel

    def _presence_room(
        self, svc: _Service, data: dict[str, Any], *, write: bool
    ) -> tuple[str, str]:
        zset, hash_ = self.prefix + _str(data, "zset"), self.prefix + _str(data, "hash")
        head, tail = f"{self.prefix}presence:{{", "}:z"
        if not (zset.startswith(head) and zset.endswith(tail)):
            raise Refused("forbidden", "not a presence key")
        room = zset[len(head) : -len(tail)]
        if (zset, hash_) != self.keys.presence_keys(room) or not room:
            raise Refused("forbidden", "not a room's presence keys")
        if not svc.scopes.presence:
            raise Refused("forbidden", "presence needs the scope 'presence'")
        if write and not svc.scopes.may_room(room):
            raise Refused("forbidden", f"room {room!r} is outside the scopes")
        return zset, hash_

    def _client_keys(self, data: dict[str, Any]) -> tuple[str, str]:
        keys = (self.prefix + _str(data, "zset"), self.prefix + _str(data, "hash"))
        if keys != self.keys.client_keys:
            raise Refused("forbidden", "not the client registry")
        return keys

    # -- publishing ---------------------------------------------------------------------------

    def _payload(self, value: Any) -> bytes:
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, bytes | bytearray):
            raise Refused("malformed", "payload must be bytes")
        if len(value) > self.max_payload:
            raise Refused("too_large", f"payload over {self.max_payload} bytes")
        return bytes(value)

    async def _on_publish(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        channel = self._publish_channel(svc, _str(data, "channel"))
        payload = self._payload(data.get("payload"))
        receivers = await self.gateway.redis.publish(channel, payload)
        svc.counts["published"] += 1
        self._count("service_published")
        return {"receivers": int(receivers)}

    async def _on_publish_many(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        messages = data.get("messages")
        if not isinstance(messages, list) or len(messages) > _MAX_BATCH:
            raise Refused("malformed", f"messages must be a list of at most {_MAX_BATCH}")
        batch: list[tuple[str, bytes]] = []
        for item in messages:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise Refused("malformed", "each message is [channel, payload]")
            rel = item[0]
            if not isinstance(rel, str) or not rel:
                raise Refused("malformed", "channel must be a non-empty string")
            batch.append((self._publish_channel(svc, rel), self._payload(item[1])))
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
        full = [self._subscribe_channel(svc, n) for n in _names(data)]
        await self._add(svc, "subscribe", full)
        return {}

    async def _on_psubscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self._subscribe_pattern(svc, n) for n in _names(data)]
        await self._add(svc, "psubscribe", full)
        return {}

    async def _on_unsubscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self.prefix + n for n in _names(data)]
        await self._drop(svc.sid, "unsubscribe", full)
        return {}

    async def _on_punsubscribe(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        full = [self.glob_prefix + n for n in _names(data)]
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
            async with asyncio.timeout(_CONFIRM_TIMEOUT):
                if new:
                    # While the listener (re)subscribes, wait for it: names it did not
                    # take from the tables are sent here, once it is up.
                    await self._ready.wait()
                    unsent = [n for n, f in new.items() if not f.done()]
                    if unsent:
                        await self._command(kind, unsent)
                if waits:
                    await asyncio.shield(asyncio.gather(*waits))
        except TimeoutError:
            raise Refused("unavailable", "Redis did not confirm the subscription") from None

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
        if gone and self._link_up:
            try:
                await self._command(kind, gone)
            except (RedisError, OSError) as exc:  # the listener renews from the tables
                log.debug("%s failed: %s", kind, exc)

    async def _command(self, kind: str, names: Sequence[str]) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        assert self._send_lock is not None
        async with self._send_lock:
            await getattr(pubsub, kind)(*names)

    # -- presence and the client registry -----------------------------------------------------

    async def _on_presence_set(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self._presence_room(svc, data, write=True)
        await self._store_member(zset, hash_, data)
        return {}

    async def _on_presence_remove(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self._presence_room(svc, data, write=True)
        await self._remove_member(zset, hash_, _str(data, "member"))
        return {}

    async def _on_presence_members(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self._presence_room(svc, data, write=False)
        raw = await self._members_script(keys=[zset, hash_], args=[])
        members = sorted({m.decode() if isinstance(m, bytes) else str(m) for m in raw})
        return {"members": members}

    async def _on_client_set(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self._client_keys(data)
        svc.info = await self._store_member(zset, hash_, data)
        return {}

    async def _on_client_remove(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self._client_keys(data)
        await self._remove_member(zset, hash_, _str(data, "member"))
        return {}

    async def _on_client_list(self, svc: _Service, data: dict[str, Any]) -> dict[str, Any]:
        zset, hash_ = self._client_keys(data)
        if not svc.scopes.presence:
            raise Refused("forbidden", "listing clients needs the scope 'presence'")
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
        member, info, ttl = _str(data, "member"), _bytes(data, "info"), _ttl(data)
        if len(info) > self.max_payload:
            raise Refused("too_large", f"info over {self.max_payload} bytes")
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

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._send_lock = asyncio.Lock()
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the Redis listener (the gateway's shutdown calls it, if it knows it)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_pubsub()

    def _new_pubsub(self) -> Any:
        """A PubSub on a connection of its own, RESP2, that never retries nor reconnects
        silently (a silent reconnect would hide lost messages)."""
        config = self.gateway.config
        r = getattr(config, "redis_config", None) or config.redis
        options: dict[str, Any] = {
            "username": r.username,
            "password": r.password,
            "db": r.db,
            "socket_connect_timeout": r.socket_connect_timeout,
            "socket_keepalive": r.socket_keepalive,
            "client_name": f"{self.gateway.node_id}:services".replace(" ", "_"),
            "retry": async_no_retry(),
            **async_client_handshake(),
            "single_connection_client": True,
        }
        if r.unix_socket_path:
            client = aioredis.Redis(unix_socket_path=r.unix_socket_path, **options)
        else:
            if r.ssl:
                options.update(ssl=True, ssl_ca_certs=r.ssl_ca_certs)
            client = aioredis.Redis(host=r.host, port=r.port, **options)
        return client.pubsub(ignore_subscribe_messages=False)

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await pubsub.connection_pool.disconnect()

    async def _run(self) -> None:
        """Subscribe, serve messages, and on any failure report it and renew with backoff."""
        attempt = 0
        was_down = False
        while True:
            try:
                await self._renew()
                if was_down:
                    log.info("service subscriptions renewed")
                    await self._announce("up", "subscriptions renewed")
                attempt, was_down = 0, False
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, RedisError | OSError | TimeoutError):
                    log.warning("service subscription link lost: %s", exc)
                else:
                    log.exception("service listener failed; renewing")
                self._link_up = False
                self._ready.clear()
                await self._close_pubsub()
                if not was_down:
                    was_down = True
                    await self._announce("down", str(exc) or type(exc).__name__)
                delay = 0.0 if attempt == 0 else min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**attempt)
                attempt += 1
                await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _renew(self) -> None:
        pubsub = self._new_pubsub()
        self._pubsub = pubsub
        # Snapshot first: names added while these commands are on their way are sent
        # by their own request once the link is up (see _add).
        channels, patterns = list(self._channel_sids), list(self._pattern_sids)
        expected = {("subscribe", self._control)}
        expected.update(("subscribe", c) for c in channels)
        expected.update(("psubscribe", p) for p in patterns)
        assert self._send_lock is not None
        async with self._send_lock:
            await pubsub.subscribe(self._control, *channels)
            if patterns:
                await pubsub.psubscribe(*patterns)
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while expected:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Redis did not confirm the subscriptions")
            message = await pubsub.get_message(timeout=min(left, _POLL))
            if message is not None:
                expected.discard(self._confirmed(message) or ("", ""))
                await self._handle(message)
        self._link_up = True
        self._ready.set()

    def _confirmed(self, message: dict[str, Any]) -> tuple[str, str] | None:
        kind = message.get("type")
        if kind in ("subscribe", "psubscribe"):
            name = message["channel"]
            return (str(kind), name.decode() if isinstance(name, bytes) else str(name))
        return None

    async def _serve(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        next_probe = time.monotonic() + _POLL * 5
        while True:
            message = await pubsub.get_message(timeout=_POLL)
            if message is not None:
                await self._handle(message)
            elif time.monotonic() >= next_probe:
                # A PING through the subscribed connection: a dead socket raises here.
                next_probe = time.monotonic() + _POLL * 5
                async with self._send_lock or asyncio.Lock():
                    await asyncio.wait_for(pubsub.ping(), _CONFIRM_TIMEOUT)

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        confirmed = self._confirmed(message)
        if confirmed is not None:
            future = self._waiting.pop(confirmed, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind not in ("message", "pmessage"):
            return
        raw_channel = message["channel"]
        channel = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "message":
            key = channel
            sids = self._channel_sids.get(channel)
            rel_key = self._rel(channel)
        else:
            raw_pattern = message["pattern"]
            key = raw_pattern.decode() if isinstance(raw_pattern, bytes) else str(raw_pattern)
            sids = self._pattern_sids.get(key)
            rel_key = self._rel_pattern(key)
        if not sids:
            return
        body = {"key": rel_key, "channel": self._rel(channel), "payload": message["data"]}
        for sid in list(sids):
            svc = self.services.get(sid)
            if svc is None:
                continue
            svc.counts["delivered"] += 1
            await self.emit("message", body, to=sid)
        self._count("service_relayed", len(sids))

    async def _announce(self, state: str, reason: str) -> None:
        for sid in list(self.services):
            with contextlib.suppress(Exception):
                await self.emit("link", {"state": state, "reason": reason}, to=sid)


_Handler = Callable[[ServiceNamespace, _Service, dict[str, Any]], Any]
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


def install(gateway: Any) -> ServiceNamespace:
    """Register the ``/service`` namespace on ``gateway.sio``; return it.

    Args:
        gateway: the :class:`eventbus.gateway.Gateway`.
    """
    namespace = ServiceNamespace(gateway)
    gateway.sio.register_namespace(namespace)
    hooks = getattr(gateway, "on_shutdown", None)
    if isinstance(hooks, list):
        hooks.append(namespace.close)
    return namespace


def snapshot(gateway: Any) -> list[dict[str, Any]]:
    """The services connected to ``gateway`` now (for the dashboard); ``[]`` if the
    namespace is not installed."""
    namespace = getattr(gateway.sio, "namespace_handlers", {}).get(NAMESPACE)
    return namespace.snapshot() if isinstance(namespace, ServiceNamespace) else []
