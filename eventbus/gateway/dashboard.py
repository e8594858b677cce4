"""The gateway's dashboard: a plain HTML page at ``/`` and its JSON API under ``/api/``.

:func:`install` returns the ASGI app that ``socketio.ASGIApp`` gets as ``other_asgi_app``:
every plain HTTP request that is not Socket.IO traffic lands here.

- ``GET /`` (and ``/static/dashboard.js``, ``/static/dashboard.css``): the page, three
  plain files shipped in the wheel; no build step, no CDN, works offline. The page holds
  no data, so it is served to anyone; everything it shows comes from the API.
- ``GET /api/state``: this node (id, counters, connected sockets), the rooms of the
  whole cluster with their members (the Redis presence keys), and the live buses of the
  client registry with their stats (what ``eventbus stats --json`` prints).
- ``GET /api/tail?after=SEQ&wait=S&limit=N``: the events this node saw after ``SEQ``
  (a long poll: waits up to ``S`` seconds for one when there is none yet).

Every ``/api/`` request needs ``Authorization: Bearer <JWT>`` with the scope ``admin``,
checked by the gateway's own verifier (same keys, audience and expiry as sockets).

The tail is a bounded ring buffer filled by this module's own ``PSUBSCRIBE`` on the
event, room and broadcast channels (one extra Redis connection per gateway node). It
starts with the app's lifespan (or with the first dashboard request, if the server does
not hand the lifespan to this app), so it holds what the node saw since then.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import redis.asyncio as aioredis

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import escape_glob
from eventbus.gateway._http import ADMIN_SCOPE as ADMIN_SCOPE  # the documented names
from eventbus.gateway._http import STATIC_DIR as STATIC_DIR
from eventbus.gateway._http import (
    HTTPError,
    Receive,
    Router,
    Scope,
    Send,
    float_param,
    int_param,
    require_admin,
    wait_disconnect,
)
from eventbus.gateway._redis import Message, Subscriber, text
from eventbus.gateway._types import SIO_ROOM_PREFIX, GatewayHost
from eventbus.gateway.services import snapshot as services_snapshot

__all__ = ["Dashboard", "DashboardLimits", "install"]

log = logging.getLogger("eventbus.gateway.dashboard")

#: Renewing the tail's lost subscription: at once, then from 0.5 s doubling up to 10 s.
TAIL_POLICY = ReconnectPolicy(first=0.5, cap=10.0)

_TAIL_PARAMS = frozenset({"after", "wait", "limit"})
_STATE_PARAMS = frozenset({"rooms", "members"})


@attrs.frozen(kw_only=True)
class DashboardLimits:
    """Bounds on what the dashboard keeps and answers (memory and work per request).

    Attributes:
        tail_size: events kept in the ring buffer.
        payload_bytes: the longest payload kept per event; longer ones are cut and shown
            as text.
        max_wait: the longest long poll of ``/api/tail``, in seconds (a server shutdown
            waits for open polls, so keep it short).
        max_waiters: concurrent long polls; more are answered 429.
        max_rooms: rooms listed by ``/api/state`` (the first ones by name).
        max_members: members listed per room (the count is always exact).
        max_clients: client records listed.
        scan_interval: seconds the list of rooms (a SCAN of the keyspace) is reused.
        scan_keys: the most keys one SCAN of the keyspace looks at; beyond, the list of
            rooms is marked truncated.
        max_query: the longest query string accepted, in bytes.
        max_token: the longest bearer token accepted, in bytes.
    """

    tail_size: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    payload_bytes: int = attrs.field(default=8192, validator=attrs.validators.ge(256))
    max_wait: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    max_waiters: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    max_rooms: int = attrs.field(default=200, validator=attrs.validators.ge(1))
    max_members: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    max_clients: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    scan_interval: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    scan_keys: int = attrs.field(default=200_000, validator=attrs.validators.ge(1000))
    max_query: int = attrs.field(default=512, validator=attrs.validators.ge(16))
    max_token: int = attrs.field(default=8192, validator=attrs.validators.ge(64))


@attrs.frozen(kw_only=True)
class _TailEntry:
    seq: int
    received: float
    channel: str
    payload: bytes
    truncated: bool


class Dashboard:
    """The dashboard's ASGI app for one gateway node; see the module docstring.

    Args:
        gateway: the gateway node (:class:`~eventbus.gateway.Gateway`, seen as a
            :class:`~eventbus.gateway._types.GatewayHost`) whose ``redis``, ``keys``,
            ``verifier``, ``counters``, ``node_id``, ``sio`` and ``sockets`` it reads,
            and whose Redis (``config``) its tail subscribes to.
        limits: bounds on memory and per-request work.

    Example::

        dashboard = Dashboard(gateway)
        app = socketio.ASGIApp(gateway.sio, other_asgi_app=dashboard)
    """

    def __init__(self, gateway: GatewayHost, *, limits: DashboardLimits | None = None) -> None:
        self._gateway = gateway
        self.limits = limits or DashboardLimits()
        self._keys: Keyspace = gateway.keys
        self._tail: collections.deque[_TailEntry] = collections.deque(maxlen=self.limits.tail_size)
        self._seq = 0
        self._new_event = asyncio.Event()
        self._waiters = 0
        self._subscriber: Subscriber | None = None
        self._scan_lock = asyncio.Lock()
        self._room_cache: tuple[float, list[str], bool] | None = None
        self._closing = False
        self._started_at = time.time()
        self._router = Router(
            api={
                "/api/state": (_STATE_PARAMS, self._api_state),
                "/api/tail": (_TAIL_PARAMS, self._api_tail),
            },
            startup=self.startup,
            shutdown=self.shutdown,
            count=self._count,
            max_query=self.limits.max_query,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the tail's subscriber (idempotent); call it on the server's startup."""
        if self._subscriber is None and not self._closing:
            self._subscriber = Subscriber(
                self._gateway.config.redis_config,
                name="dashboard tail",
                client_name=f"{self._gateway.node_id}:dashboard",
                counters=self._gateway.counters,
                lost_counter="dashboard_tail_errors",
                policy=TAIL_POLICY,
                names=self._tail_names,
                on_message=self._on_message,
                log=log,
            )
            self._subscriber.start()

    async def shutdown(self) -> None:
        """Stop the tail's subscriber and release open long polls."""
        self._closing = True
        self._new_event.set()
        subscriber, self._subscriber = self._subscriber, None
        if subscriber is not None:
            await subscriber.stop()

    @property
    def _subscribed(self) -> bool:
        return self._subscriber is not None and self._subscriber.ready.is_set()

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http`` or ``lifespan``; others are closed)."""
        await self._router(scope, receive, send)

    async def _api_state(self, scope: Scope, receive: Receive, query: dict[str, str]) -> Any:
        self._authorize(scope)
        await self.startup()
        limits = self.limits
        return await self.state(
            rooms=int_param(query, "rooms", limits.max_rooms, 0, limits.max_rooms),
            members=int_param(query, "members", limits.max_members, 0, limits.max_members),
        )

    async def _api_tail(self, scope: Scope, receive: Receive, query: dict[str, str]) -> Any:
        after = int_param(query, "after", 0, 0, 2**53)
        wait = float_param(query, "wait", 0.0, 0.0, self.limits.max_wait)
        limit = int_param(query, "limit", 100, 1, self.limits.tail_size)
        self._authorize(scope)
        await self.startup()
        return await self.tail(after=after, wait=wait, limit=limit, receive=receive)

    def _authorize(self, scope: Scope) -> None:
        require_admin(scope, self._gateway.verifier, max_token=self.limits.max_token)

    def _count(self, name: str) -> None:
        self._gateway.counters.add(name)

    # -- /api/state ------------------------------------------------------------------------

    async def state(self, *, rooms: int, members: int) -> dict[str, Any]:
        """The JSON document of ``/api/state``: node, sockets, rooms, services, tail."""
        redis = self._gateway.redis
        seconds, micros = await redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return {
            "node": self._node(),
            "sockets": self._sockets(),
            "node_services": self._node_services(),
            "rooms": await self._rooms(redis, now_ms, rooms, members),
            "services": await self._clients(redis, now_ms),
            "tail": {
                "last": self._seq,
                "size": len(self._tail),
                "capacity": self.limits.tail_size,
                "subscribed": self._subscribed,
            },
            "server_time": now_ms / 1000,
        }

    def _node(self) -> dict[str, Any]:
        return {
            "node_id": self._gateway.node_id,
            "key_prefix": self._keys.prefix,
            "counters": {str(k): v for k, v in sorted(self._gateway.stats().items())},
            "tail_running": self._subscribed,
            "dashboard_started_at": self._started_at,
        }

    def _sockets(self) -> list[dict[str, Any]]:
        """This node's sockets (every namespace) and their rooms, from Socket.IO's manager.

        Browser sockets get their user, address, connect time and token expiry from
        the gateway's ``sockets`` table.
        """
        by_ns: Mapping[str, Mapping[Any, Mapping[str, Any]]] = self._gateway.sio.manager.rooms
        known = self._gateway.sockets
        sockets: dict[tuple[str, str], dict[str, Any]] = {}
        for namespace, rooms in list(by_ns.items()):
            for room, sids in list(rooms.items()):
                for sid in list(sids):
                    entry = sockets.setdefault(
                        (namespace, sid), {"sid": sid, "namespace": namespace, "rooms": []}
                    )
                    if room is not None and room != sid:
                        name = str(room)
                        if namespace == "/" and name.startswith(SIO_ROOM_PREFIX):
                            name = name[len(SIO_ROOM_PREFIX) :]  # the eventbus room
                        entry["rooms"].append(name)
        out = []
        for (namespace, sid), entry in sorted(sockets.items()):
            entry["rooms"].sort()
            state = known.get(sid) if namespace == "/" else None
            if state is not None:
                entry.update(
                    user=state.user,
                    ip=state.ip,
                    connected_at=state.connected_at,
                    expires_at=state.claims.exp,
                )
            out.append(entry)
        return out

    def _node_services(self) -> list[dict[str, Any]]:
        """Services connected to this node's ``/service`` namespace, with their scopes."""
        found = services_snapshot(self._gateway)  # [] when the namespace is not installed
        for entry in found:
            # The bus's client record is shown under "services"; keep only its id here.
            info = _json_or_text(entry.pop("info", None))
            entry["client_id"] = info.get("client_id") if isinstance(info, dict) else None
        return found

    async def _room_names(self, redis: aioredis.Redis) -> tuple[list[str], bool]:
        """Every room with a presence key (SCAN), cached; False if the scan was cut short.

        Rooms have no index in the layout, so this SCANs the keyspace: at most
        ``scan_keys`` keys per scan, and at most one scan per ``scan_interval`` seconds
        however many dashboards poll.
        """
        now = time.monotonic()
        if self._room_cache is not None and now - self._room_cache[0] < self.limits.scan_interval:
            return self._room_cache[1], self._room_cache[2]
        async with self._scan_lock:
            if (
                self._room_cache is not None
                and now - self._room_cache[0] < self.limits.scan_interval
            ):
                return self._room_cache[1], self._room_cache[2]
            zhead = f"{self._keys.prefix}presence:{{"
            match = escape_glob(zhead) + "*}:z"
            names: set[str] = set()
            cursor, scanned, complete = 0, 0, True
            while True:
                cursor, keys = await redis.scan(cursor, match=match, count=1000)
                scanned += 1000
                for key in keys:
                    name = text(key)
                    if name.startswith(zhead) and name.endswith("}:z"):
                        names.add(name[len(zhead) : -3])
                if not int(cursor):
                    break
                if scanned >= self.limits.scan_keys:
                    complete = False
                    break
            self._room_cache = (time.monotonic(), sorted(names), complete)
            return self._room_cache[1], complete

    async def _rooms(
        self, redis: aioredis.Redis, now_ms: int, limit: int, members: int
    ) -> dict[str, Any]:
        """Rooms with live members, from the presence keys of the whole cluster."""
        names, complete = await self._room_names(redis)
        chosen = names[:limit]
        if not chosen:
            return {"total": len(names), "listed": [], "truncated": not complete}
        pipe = redis.pipeline(transaction=False)
        for room in chosen:
            zset, _ = self._keys.presence_keys(room)
            pipe.zcount(zset, f"({now_ms}", "+inf")
            pipe.zrangebyscore(zset, f"({now_ms}", "+inf", start=0, num=members, withscores=True)
        replies = await pipe.execute()
        live_rooms = [
            (room, int(replies[2 * i]), replies[2 * i + 1])
            for i, room in enumerate(chosen)
            if replies[2 * i]  # rooms whose members all expired are left out
        ]
        pipe = redis.pipeline(transaction=False)
        for room, _, live in live_rooms:
            pipe.hmget(self._keys.presence_keys(room)[1], [m for m, _ in live] or ["-"])
        infos = await pipe.execute() if live_rooms else []
        listed = [
            {
                "room": room,
                "count": count,
                "members": [
                    {
                        "id": text(member),
                        "expires_at": float(score) / 1000,
                        "info": _json_or_text(info),
                    }
                    for (member, score), info in zip(live, room_infos[: len(live)], strict=True)
                ],
            }
            for (room, count, live), room_infos in zip(live_rooms, infos, strict=True)
        ]
        return {
            "total": len(names),
            "listed": listed,
            "truncated": len(names) > limit or not complete,
        }

    async def _clients(self, redis: aioredis.Redis, now_ms: int) -> dict[str, Any]:
        """Live buses of the client registry, shaped like ``eventbus stats --json``."""
        zset, hash_ = self._keys.client_keys
        count = await redis.zcount(zset, f"({now_ms}", "+inf")
        live: list[Any] = await redis.zrangebyscore(
            zset, f"({now_ms}", "+inf", start=0, num=self.limits.max_clients, withscores=True
        )
        infos = await redis.hmget(hash_, [m for m, _ in live]) if live else []
        clients: list[dict[str, Any]] = []
        for (member, score), info in zip(live, infos, strict=True):
            doc = _json_or_text(info)
            if not isinstance(doc, dict):
                continue  # gone between the two reads, or not a bus record
            clients.append(
                {
                    "client_id": text(member),
                    "service_name": str(doc.get("service", "")),
                    "kind": str(doc.get("kind", "bus")),
                    "host": str(doc.get("host", "")),
                    "pid": doc.get("pid"),
                    "transport": str(doc.get("transport", "")),
                    "subscriptions": list(_strings(doc.get("subscriptions"))),
                    "rooms": list(_strings(doc.get("rooms"))),
                    "stats": doc.get("stats") if isinstance(doc.get("stats"), dict) else {},
                    "expires_at": float(score) / 1000,
                }
            )
        clients.sort(key=lambda c: (c["service_name"], c["client_id"]))
        return {"total": int(count), "listed": clients, "truncated": count > len(live)}

    # -- /api/tail -------------------------------------------------------------------------

    async def tail(
        self, *, after: int, wait: float, limit: int, receive: Receive | None = None
    ) -> dict[str, Any]:
        """The JSON document of ``/api/tail``: events with a sequence number above ``after``.

        With none yet, waits up to ``wait`` seconds for one (or for the client to go).
        """
        # `after` above the newest number: the client counted on a node that restarted;
        # answer at once, and `last` below `after` tells it to start again.
        if wait > 0 and self._seq == after and not self._closing:
            if self._waiters >= self.limits.max_waiters:
                raise HTTPError(
                    429, "too_many_waiters", "too many open long polls", counter="dashboard_busy"
                )
            self._waiters += 1
            try:
                await self._wait_for_event(after, wait, receive)
            finally:
                self._waiters -= 1
        entries = [e for e in self._tail if e.seq > after][-limit:]
        return {
            "events": [_entry_json(e, self._keys) for e in entries],
            "last": self._seq,
            # Events after `after` not returned (out of the ring buffer, or over `limit`).
            "missed": max(0, self._seq - after - len(entries)) if after else 0,
        }

    async def _wait_for_event(self, after: int, wait: float, receive: Receive | None) -> None:
        deadline = asyncio.get_running_loop().time() + wait
        gone: asyncio.Task[Any] | None = None
        if receive is not None:
            gone = asyncio.create_task(wait_disconnect(receive))
        try:
            while self._seq == after and not self._closing:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                arrived = asyncio.create_task(self._new_event.wait())
                pending: Iterable[asyncio.Task[Any]] = [arrived] + ([gone] if gone else [])
                done, _ = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                arrived.cancel()
                if gone is not None and gone in done:
                    return
        finally:
            if gone is not None:
                gone.cancel()

    def record(self, channel: str, payload: bytes) -> None:
        """Add one message seen on ``channel`` to the tail (the subscriber calls it)."""
        self._seq += 1
        cut = len(payload) > self.limits.payload_bytes
        self._tail.append(
            _TailEntry(
                seq=self._seq,
                received=time.time(),
                channel=channel,
                payload=payload[: self.limits.payload_bytes] if cut else payload,
                truncated=cut,
            )
        )
        if self._waiters:  # wake every open long poll; later ones wait on a fresh event
            self._new_event.set()
            self._new_event = asyncio.Event()

    def _tail_names(self) -> tuple[list[str], list[str]]:
        prefix = escape_glob(self._keys.prefix)
        return [self._keys.broadcast_channel], [f"{prefix}ev:*", f"{prefix}room:*"]

    async def _on_message(self, message: Message) -> None:
        data = message.get("data")
        payload = data if isinstance(data, bytes) else str(data).encode()
        self.record(text(message.get("channel", "")), payload)


def _strings(value: Any) -> Iterable[str]:
    return (str(v) for v in value) if isinstance(value, list) else ()


def _json_or_text(raw: Any) -> Any:
    if raw is None:
        return None
    decoded = text(raw)
    try:
        return json.loads(decoded)
    except ValueError:
        return decoded


def _entry_json(entry: _TailEntry, keys: Keyspace) -> dict[str, Any]:
    event_type = keys.event_type_of(entry.channel)
    room = keys.room_of(entry.channel)
    if event_type is not None:
        kind, target = "event", event_type
    elif room is not None:
        kind, target = ("user", room[5:]) if room.startswith("user:") else ("room", room)
    else:
        kind, target = "broadcast", ""
    doc: dict[str, Any] = {
        "seq": entry.seq,
        "received": entry.received,
        "channel": entry.channel,
        "kind": kind,
        "target": target,
        "truncated": entry.truncated,
    }
    envelope = None if entry.truncated else _json_or_text(entry.payload)
    if isinstance(envelope, dict):
        doc["envelope"] = envelope
    else:
        doc["raw"] = entry.payload.decode("utf-8", "replace")
    return doc


def install(gateway: GatewayHost, *, limits: DashboardLimits | None = None) -> Dashboard:
    """Build the dashboard of ``gateway``: the ASGI app for ``other_asgi_app``.

    The tail starts and stops with the gateway: :meth:`Dashboard.startup` and
    :meth:`Dashboard.shutdown` are added to ``gateway.on_startup`` / ``on_shutdown``.
    The app also handles an ASGI lifespan when a server hands it one, and without
    either the tail starts with the first dashboard request.

    Args:
        gateway: the gateway node whose state the dashboard shows.
        limits: bounds on memory and per-request work (defaults: :class:`DashboardLimits`).

    Returns:
        The :class:`Dashboard`, an ASGI app.
    """
    dashboard = Dashboard(gateway, limits=limits)
    gateway.on_startup.append(dashboard.startup)
    gateway.on_shutdown.append(dashboard.shutdown)
    return dashboard
