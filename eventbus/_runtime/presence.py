"""Room membership and the client registry of one bus, kept alive by a heartbeat.

Both live on the server as expiring records (``transport.presence``; the keys are in
docs/wire-format.md, "Redis keys and channels"): a bus refreshes its rooms
and its client record every ``heartbeat_interval`` seconds, and a process that dies
drops out ``presence_ttl`` seconds later, when readers prune it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable

from eventbus._core.keyspace import Keyspace
from eventbus._core.stats import Counters
from eventbus._errors import EventBusError, TransportError
from eventbus._models import ClientInfo
from eventbus._transports.base import Transport

__all__ = ["Presence"]

log = logging.getLogger("eventbus.presence")


class Presence:
    """The rooms a bus joined, its client record, and the heartbeat thread."""

    def __init__(
        self,
        *,
        keys: Keyspace,
        client_id: str,
        ttl: float,
        interval: float,
        timeout: float,
        describe: Callable[[], dict[str, object]],
        counters: Counters,
        report: Callable[..., None],
    ) -> None:
        self._keys = keys
        self._client_id = client_id
        self._ttl = ttl
        self._interval = interval
        self._timeout = timeout
        self._describe = describe
        self._counters = counters
        self._report = report
        self._member_info = json.dumps({"client_id": client_id, "kind": "bus"}).encode()
        # Guards `_rooms` and orders heartbeat writes against leave(): a beat enters a
        # room only while holding it and only if the room is still joined.
        self._lock = threading.Lock()
        self._rooms: set[str] = set()
        self._transport: Transport | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        #: Called with the transport at every beat (the bus reloads its group registry).
        self.on_beat: Callable[[Transport], None] | None = None

    @property
    def rooms(self) -> list[str]:
        """The joined rooms, sorted."""
        with self._lock:
            return sorted(self._rooms)

    def add(self, room: str) -> bool:
        """Record ``room`` as joined; False if it already was."""
        with self._lock:
            if room in self._rooms:
                return False
            self._rooms.add(room)
            return True

    def remove(self, room: str) -> bool:
        """Record ``room`` as left; False if it was not joined.

        A heartbeat that has not yet refreshed ``room`` will not do so any more.
        """
        with self._lock:
            if room not in self._rooms:
                return False
            self._rooms.discard(room)
            return True

    def start(self, transport: Transport) -> None:
        """Register on ``transport`` now, then start the heartbeat thread.

        The first beat runs on the caller's thread, so that rooms joined before
        connecting and the client record are visible when ``connect()`` returns.
        """
        self._transport = transport
        self._stop.clear()
        self._beat_safely(transport)
        self._thread = threading.Thread(target=self._run, name="eventbus-heartbeat", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Refresh everything now (after a reconnect the server may have lost it)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the heartbeat and remove this bus's records from the server."""
        transport = self._transport
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(1.0, self._timeout))
        self._transport = None
        if transport is None:
            return
        timeout = min(1.0, self._timeout)
        try:
            zset, hash_ = self._keys.client_keys
            transport.presence.client_remove(zset, hash_, self._client_id, timeout)
            for room in self.rooms:
                zset, hash_ = self._keys.presence_keys(room)
                transport.presence.presence_remove(zset, hash_, self._client_id, timeout)
        except TransportError as exc:
            log.warning("could not remove this bus's presence on disconnect: %s", exc)

    def enter(self, transport: Transport, room: str) -> None:
        """Write this bus into ``room``'s member list now."""
        zset, hash_ = self._keys.presence_keys(room)
        transport.presence.presence_set(
            zset, hash_, self._client_id, self._member_info, self._ttl, self._timeout
        )

    def exit(self, transport: Transport, room: str) -> None:
        """Remove this bus from ``room``'s member list now."""
        zset, hash_ = self._keys.presence_keys(room)
        transport.presence.presence_remove(zset, hash_, self._client_id, self._timeout)

    def members(self, transport: Transport, room: str) -> list[str]:
        """Live members of ``room``, expired ones pruned."""
        zset, hash_ = self._keys.presence_keys(room)
        return transport.presence.presence_members(zset, hash_, self._timeout)

    def clients(self, transport: Transport) -> list[ClientInfo]:
        """Every live bus registered on the server; unreadable records are logged."""
        zset, hash_ = self._keys.client_keys
        clients = []
        for record in transport.presence.client_list(zset, hash_, self._timeout):
            try:
                doc = json.loads(record.info)
                clients.append(
                    ClientInfo(
                        client_id=record.client_id,
                        service_name=str(doc["service"]),
                        host=str(doc["host"]),
                        pid=int(doc["pid"]),
                        transport=str(doc["transport"]),
                        subscriptions=tuple(doc["subscriptions"]),
                        rooms=tuple(doc["rooms"]),
                        stats=dict(doc["stats"]),
                        expires_at=record.expires_at,
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable client record %s: %r", record.client_id, exc)
        return clients

    def _beat(self, transport: Transport) -> None:
        doc = self._describe()
        doc.update(rooms=self.rooms, pid=os.getpid())
        info = json.dumps(doc, separators=(",", ":")).encode()
        zset, hash_ = self._keys.client_keys
        transport.presence.client_set(zset, hash_, self._client_id, info, self._ttl, self._timeout)
        for room in self.rooms:
            with self._lock:
                if room in self._rooms:
                    self.enter(transport, room)
        if self.on_beat is not None:
            self.on_beat(transport)

    def _run(self) -> None:
        while not self._stop.is_set():
            transport = self._transport
            if transport is None:
                return
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stop.is_set():
                self._beat_safely(transport)

    def _beat_safely(self, transport: Transport) -> None:
        """One beat; a failure is counted and reported, and the next beat tries again."""
        try:
            self._beat(transport)
        except TransportError as exc:
            self._counters.add("heartbeat_errors")
            log.warning("heartbeat failed: %s", exc)
            self._report(exc, log_unhandled=False)  # logged just above
        except Exception as exc:
            self._counters.add("heartbeat_errors")
            log.exception("heartbeat failed")
            self._report(EventBusError(f"heartbeat failed: {exc!r}"))
