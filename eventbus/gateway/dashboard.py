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
import contextlib
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import attrs

from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import escape_glob
from eventbus.gateway._app import SIO_ROOM_PREFIX
from eventbus.gateway._auth import AuthError

__all__ = ["Dashboard", "DashboardLimits", "install"]

log = logging.getLogger("eventbus.gateway.dashboard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ADMIN_SCOPE = "admin"
"""The token scope that opens the dashboard's API."""

STATIC_DIR = Path(__file__).with_name("static")
"""Where the page's files live (shipped as package data)."""

_STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]

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


class _HTTPError(Exception):
    """Answer the request with ``status`` and ``{"error": code, "message": message}``."""

    def __init__(self, status: int, code: str, message: str, *, counter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.counter = counter


@attrs.frozen(kw_only=True)
class _TailEntry:
    seq: int
    received: float
    channel: str
    payload: bytes
    truncated: bool


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Dashboard:
    """The dashboard's ASGI app for one gateway node; see the module docstring.

    Args:
        gateway: the :class:`~eventbus.gateway.Gateway` whose ``redis``, ``keys``,
            ``verifier``, ``counters``, ``node_id`` and ``sio`` it reads.
        limits: bounds on memory and per-request work.

    Example::

        dashboard = Dashboard(gateway)
        app = socketio.ASGIApp(gateway.sio, other_asgi_app=dashboard)
    """

    def __init__(self, gateway: Any, *, limits: DashboardLimits | None = None) -> None:
        self._gateway = gateway
        self.limits = limits or DashboardLimits()
        keys = getattr(gateway, "keys", None)
        self._keys: Keyspace = keys if isinstance(keys, Keyspace) else Keyspace()
        self._tail: collections.deque[_TailEntry] = collections.deque(maxlen=self.limits.tail_size)
        self._seq = 0
        self._new_event = asyncio.Event()
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None
        self._subscribed = False
        self._scan_lock = asyncio.Lock()
        self._room_cache: tuple[float, list[str], bool] | None = None
        self._closing = False
        self._started_at = time.time()

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the tail's subscriber (idempotent); call it on the server's startup."""
        if self._task is None and not self._closing:
            self._task = asyncio.create_task(self._run_tail(), name="eventbus-dashboard-tail")

    async def shutdown(self) -> None:
        """Stop the tail's subscriber and release open long polls."""
        self._closing = True
        self._new_event.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http`` or ``lifespan``; others are closed)."""
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, content_type = await self._route(scope, receive)
        except _HTTPError as exc:
            self._count(exc.counter)
            status, content_type = exc.status, "application/json"
            body = json.dumps({"error": exc.code, "message": exc.message}).encode()
        except Exception:  # a bug or Redis failure: answer 500, log, count, keep serving
            log.exception("dashboard request %s failed", scope.get("path"))
            self._count("dashboard_errors")
            status, content_type = 500, "application/json"
            body = b'{"error":"internal","message":"see the gateway log"}'
        headers = [(b"content-type", content_type.encode()), *_SECURITY_HEADERS]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="eventbus-dashboard"'))
        headers.append((b"content-length", str(len(body)).encode()))
        if scope.get("method") == "HEAD":
            body = b""
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, str]:
        path = scope.get("path", "")
        raw_query: bytes = scope.get("query_string", b"")
        if len(path) > 256 or len(raw_query) > self.limits.max_query:
            raise _HTTPError(414, "too_long", "the URL is too long", counter="dashboard_malformed")
        if scope.get("method") not in ("GET", "HEAD"):
            raise _HTTPError(405, "method_not_allowed", "only GET", counter="dashboard_malformed")
        if path in _STATIC_FILES:
            name, content_type = _STATIC_FILES[path]
            return 200, (STATIC_DIR / name).read_bytes(), content_type
        if path == "/api/state":
            query = self._query(raw_query, _STATE_PARAMS)
            self._authorize(scope)
            await self.startup()
            state = await self.state(
                rooms=self._int(query, "rooms", self.limits.max_rooms, 0, self.limits.max_rooms),
                members=self._int(
                    query, "members", self.limits.max_members, 0, self.limits.max_members
                ),
            )
            return 200, json.dumps(state).encode(), "application/json"
        if path == "/api/tail":
            query = self._query(raw_query, _TAIL_PARAMS)
            after = self._int(query, "after", 0, 0, 2**53)
            wait = self._float(query, "wait", 0.0, 0.0, self.limits.max_wait)
            limit = self._int(query, "limit", 100, 1, self.limits.tail_size)
            self._authorize(scope)
            await self.startup()
            tail = await self.tail(after=after, wait=wait, limit=limit, receive=receive)
            return 200, json.dumps(tail).encode(), "application/json"
        raise _HTTPError(
            404, "not_found", f"no such page: {path[:80]!r}", counter="dashboard_not_found"
        )

    # -- input -----------------------------------------------------------------------------

    def _query(self, raw: bytes, allowed: frozenset[str]) -> dict[str, str]:
        try:
            pairs = urllib.parse.parse_qsl(
                raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw)
            )
        except (UnicodeDecodeError, ValueError):
            raise _HTTPError(
                400, "malformed", "unreadable query string", counter="dashboard_malformed"
            ) from None
        query: dict[str, str] = {}
        for key, value in pairs:
            if key not in allowed or key in query:
                raise _HTTPError(
                    400,
                    "malformed",
                    f"unexpected or repeated query parameter {key[:40]!r}",
                    counter="dashboard_malformed",
                )
            query[key] = value
        return query

    @staticmethod
    def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
        if name not in query:
            return default
        text = query[name]
        if not text.isdigit() or len(text) > 16 or not low <= int(text) <= high:
            raise _HTTPError(
                400,
                "malformed",
                f"{name} must be an integer from {low} to {high}",
                counter="dashboard_malformed",
            )
        return int(text)

    @staticmethod
    def _float(
        query: Mapping[str, str], name: str, default: float, low: float, high: float
    ) -> float:
        if name not in query:
            return default
        try:
            value = float(query[name]) if len(query[name]) <= 16 else math.nan
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN fails too
            raise _HTTPError(
                400,
                "malformed",
                f"{name} must be a number from {low:g} to {high:g}",
                counter="dashboard_malformed",
            )
        return value

    def _authorize(self, scope: Scope) -> None:
        """Require a bearer token with the ``admin`` scope; raise 401/403 otherwise."""
        header = b""
        for key, value in scope.get("headers", ()):
            if key.lower() == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise _HTTPError(
                401,
                "unauthorized",
                "an admin token is required (Authorization: Bearer <JWT>)",
                counter="dashboard_unauthorized",
            )
        if len(token) > self.limits.max_token:
            raise _HTTPError(
                401, "unauthorized", "the token is too long", counter="dashboard_unauthorized"
            )
        try:
            claims = self._gateway.verifier.verify(token.strip().decode("ascii"))
        except UnicodeDecodeError:
            raise _HTTPError(
                401, "unauthorized", "the token is not ASCII", counter="dashboard_unauthorized"
            ) from None
        except AuthError as exc:
            raise _HTTPError(401, exc.code, exc.message, counter="dashboard_unauthorized") from None
        if ADMIN_SCOPE not in claims.scopes:
            raise _HTTPError(
                403,
                "forbidden",
                "the token lacks the 'admin' scope",
                counter="dashboard_unauthorized",
            )

    def _count(self, name: str | None) -> None:
        """Bump the gateway counter ``name`` (a ``Counters``-like ``add`` or a dict)."""
        if name is None:
            return
        counters = getattr(self._gateway, "counters", None)
        add = getattr(counters, "add", None)
        if callable(add):
            add(name)
        elif isinstance(counters, MutableMapping):
            counters[name] = counters.get(name, 0) + 1

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
        gateway = self._gateway
        stats = getattr(gateway, "stats", None)
        if callable(stats):  # the Gateway's counters and gauges
            values = dict(stats())
        else:
            counters = getattr(gateway, "counters", None)
            snapshot = getattr(counters, "snapshot", None)
            values = dict(snapshot() if callable(snapshot) else counters or {})
        return {
            "node_id": str(getattr(gateway, "node_id", "")),
            "key_prefix": self._keys.prefix,
            "counters": {str(k): v for k, v in sorted(values.items())},
            "tail_running": self._subscribed,
            "dashboard_started_at": self._started_at,
        }

    def _sockets(self) -> list[dict[str, Any]]:
        """This node's sockets (every namespace) and their rooms, from Socket.IO's manager.

        Browser sockets get their user, address, connect time and token expiry from
        the gateway's ``sockets`` table.
        """
        manager = getattr(getattr(self._gateway, "sio", None), "manager", None)
        by_ns: Mapping[str, Mapping[Any, Mapping[str, Any]]] = getattr(manager, "rooms", {})
        known: Mapping[str, Any] = getattr(self._gateway, "sockets", None) or {}
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
                claims = getattr(state, "claims", None)
                entry.update(
                    user=getattr(state, "user", None),
                    ip=getattr(state, "ip", None),
                    connected_at=getattr(state, "connected_at", None),
                    expires_at=getattr(claims, "exp", None),
                )
            out.append(entry)
        return out

    def _node_services(self) -> list[dict[str, Any]]:
        """Services connected to this node's ``/service`` namespace, with their scopes."""
        from eventbus.gateway import services  # a sibling plug-in; absent in a bare app

        if getattr(self._gateway, "sio", None) is None:
            return []
        found = services.snapshot(self._gateway)
        for entry in found:
            # The bus's client record is shown under "services"; keep only its id here.
            info = _json_or_text(entry.pop("info", None))
            entry["client_id"] = info.get("client_id") if isinstance(info, dict) else None
        return found

    async def _room_names(self, redis: Any) -> tuple[list[str], bool]:
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
                    text = _text(key)
                    if text.startswith(zhead) and text.endswith("}:z"):
                        names.add(text[len(zhead) : -3])
                if not int(cursor):
                    break
                if scanned >= self.limits.scan_keys:
                    complete = False
                    break
            self._room_cache = (time.monotonic(), sorted(names), complete)
            return self._room_cache[1], complete

    async def _rooms(self, redis: Any, now_ms: int, limit: int, members: int) -> dict[str, Any]:
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
                        "id": _text(member),
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

    async def _clients(self, redis: Any, now_ms: int) -> dict[str, Any]:
        """Live buses of the client registry, shaped like ``eventbus stats --json``."""
        zset, hash_ = self._keys.client_keys
        count = await redis.zcount(zset, f"({now_ms}", "+inf")
        live = await redis.zrangebyscore(
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
                    "client_id": _text(member),
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
                raise _HTTPError(
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
            gone = asyncio.create_task(_wait_disconnect(receive))
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

    async def _run_tail(self) -> None:
        """Subscribe to events, rooms and broadcasts and record them; resubscribe on errors."""
        prefix = escape_glob(self._keys.prefix)
        patterns = [f"{prefix}ev:*", f"{prefix}room:*"]
        delay = 0.5
        while not self._closing:
            pubsub = self._gateway.redis.pubsub()
            try:
                await pubsub.psubscribe(*patterns)
                await pubsub.subscribe(self._keys.broadcast_channel)
                confirmed = 0
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = message.get("type")
                    if kind in ("message", "pmessage"):
                        data = message.get("data")
                        payload = data if isinstance(data, bytes) else str(data).encode()
                        self.record(_text(message.get("channel", "")), payload)
                    elif kind in ("subscribe", "psubscribe"):
                        confirmed += 1
                        if confirmed == len(patterns) + 1:  # from now on, nothing is missed
                            self._subscribed = True
                            delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: count, log, resubscribe with backoff
                self._count("dashboard_tail_errors")
                log.warning("dashboard tail subscriber failed, retrying in %.1fs: %r", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self._subscribed = False
                try:
                    await pubsub.aclose()
                except Exception as exc:
                    log.debug("closing the dashboard tail's connection failed: %r", exc)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _strings(value: Any) -> Iterable[str]:
    return (str(v) for v in value) if isinstance(value, list) else ()


def _json_or_text(raw: Any) -> Any:
    if raw is None:
        return None
    text = _text(raw)
    try:
        return json.loads(text)
    except ValueError:
        return text


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


def install(gateway: Any, *, limits: DashboardLimits | None = None) -> Dashboard:
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
    for hooks, hook in (
        (getattr(gateway, "on_startup", None), dashboard.startup),
        (getattr(gateway, "on_shutdown", None), dashboard.shutdown),
    ):
        if isinstance(hooks, list):
            hooks.append(hook)
    return dashboard
