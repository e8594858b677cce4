"""Durable groups on the ``memory://`` broker: Redis Streams semantics, in process.

The same model as Redis: a group stream holds entries under increasing ids, a consumer
group remembers the last entry it delivered and a pending list (entry -> consumer,
delivery time, delivery count), entries are acknowledged, claimed from idle consumers,
trimmed by ``maxlen``, and moved to a dead-letter stream. Nothing survives the process:
"durable" here means durable across the bus's own threads, for tests and demos.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import attrs

from eventbus._errors import GroupMissingError
from eventbus._models import DeadLetter, GroupInfo
from eventbus._transports.base import StreamEntry, StreamTarget

__all__ = ["MemoryStreams"]


@attrs.define(eq=False)
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@attrs.define(eq=False)
class _Group:
    last_id: tuple[int, int]
    pending: OrderedDict[tuple[int, int], _Pending] = attrs.field(factory=OrderedDict)
    consumers: set[str] = attrs.field(factory=set)
    read: int = 0


@attrs.define(eq=False)
class _Stream:
    entries: OrderedDict[tuple[int, int], dict[str, bytes]] = attrs.field(factory=OrderedDict)
    groups: dict[str, _Group] = attrs.field(factory=dict)
    last_id: tuple[int, int] = (0, 0)
    added: int = 0


def _format(entry_id: tuple[int, int]) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def _parse(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class MemoryStreams:
    """The streams of one memory broker; every method takes the broker's lock."""

    def __init__(self, lock: threading.Lock) -> None:
        self.reset(lock)

    def reset(self, lock: threading.Lock) -> None:
        """Use ``lock`` (a new one after fork); keeps the streams."""
        self._lock = lock
        self._changed = threading.Condition(lock)
        if not hasattr(self, "_streams"):
            self._streams: dict[str, _Stream] = {}
            self._hashes: dict[str, dict[str, bytes]] = {}

    # -- writing (broker lock held by the caller) -------------------------------------

    def append(self, stream: str, fields: dict[str, bytes], maxlen: int | None) -> str:
        """XADD: append an entry under a new id, trim to ``maxlen``; lock held."""
        data = self._streams.get(stream)
        if data is None:
            data = self._streams[stream] = _Stream()
        now = time.time_ns() // 1_000_000
        ms, seq = data.last_id
        entry_id = (now, 0) if now > ms else (ms, seq + 1)
        data.last_id = entry_id
        data.entries[entry_id] = fields
        data.added += 1
        if maxlen is not None:
            while len(data.entries) > maxlen:
                data.entries.popitem(last=False)
        self._changed.notify_all()
        return _format(entry_id)

    def route_locked(self, payload: bytes, targets: Sequence[StreamTarget]) -> None:
        """Append ``payload`` to every target stream; lock held."""
        for target in targets:
            self.append(target.stream, {"e": payload}, target.maxlen)

    # -- groups -----------------------------------------------------------------------

    def group_create(self, stream: str, group: str, start: str) -> bool:
        """XGROUP CREATE ... MKSTREAM."""
        with self._lock:
            data = self._streams.get(stream)
            if data is None:
                data = self._streams[stream] = _Stream()
            if group in data.groups:
                return False
            # Like Redis: the group delivers the entries after `start`.
            last = data.last_id if start == "$" else _parse(start)
            # Like the Redis transport's entries-read: what the group starts after
            # counts as read (entries trimmed before now, and those up to `start`).
            upto = sum(1 for i in data.entries if i <= last)
            read = data.added - len(data.entries) + upto
            data.groups[group] = _Group(last_id=last, read=read)
            return True

    def group_take_lost(self, stream: str, group: str) -> int:
        """Entries trimmed before the group read them, since the last call."""
        with self._lock:
            data = self._streams.get(stream)
            found = data.groups.get(group) if data is not None else None
            if data is None or found is None:
                return 0
            gap = data.added - found.read - self._backlog(data, found)
            found.read += gap
            return max(0, gap)

    @staticmethod
    def _backlog(data: _Stream, found: _Group) -> int:
        return sum(1 for i in data.entries if i > found.last_id)

    def _group(self, stream: str, group: str) -> tuple[_Stream, _Group]:
        data = self._streams.get(stream)
        found = data.groups.get(group) if data is not None else None
        if data is None or found is None:
            raise GroupMissingError(
                f"the stream {stream!r} or its group {group!r} does not exist",
                stream=stream,
                group=group,
            )
        return data, found

    def group_read(
        self, stream: str, group: str, consumer: str, count: int, block: float
    ) -> list[StreamEntry]:
        """XREADGROUP ... BLOCK ... >: new entries, now pending for ``consumer``."""
        deadline = time.monotonic() + block
        with self._lock:
            while True:
                data, found = self._group(stream, group)
                found.consumers.add(consumer)
                fresh = [(i, f) for i, f in data.entries.items() if i > found.last_id][:count]
                if fresh:
                    now = time.monotonic()
                    out = []
                    for entry_id, fields in fresh:
                        found.pending[entry_id] = _Pending(consumer, now, 1)
                        out.append(
                            StreamEntry(id=_format(entry_id), payload=fields["e"], deliveries=1)
                        )
                    found.last_id = fresh[-1][0]
                    found.read += len(fresh)
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._changed.wait(remaining)

    def group_ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """XACK."""
        with self._lock:
            data = self._streams.get(stream)
            found = data.groups.get(group) if data is not None else None
            if found is None:
                return 0
            return sum(found.pending.pop(_parse(i), None) is not None for i in ids)

    def group_claim(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle: float,
        count: int,
        exclude: Sequence[str] = (),
    ) -> tuple[list[StreamEntry], list[str]]:
        """Take over entries idle for ``min_idle`` s (not ``exclude``); report (and ack)
        trimmed ones."""
        skip = {_parse(i) for i in exclude}
        with self._lock:
            data, found = self._group(stream, group)
            found.consumers.add(consumer)
            now = time.monotonic()
            claimed: list[StreamEntry] = []
            gone: list[str] = []
            for entry_id, pending in list(found.pending.items()):
                if len(claimed) + len(gone) >= count:
                    break
                if now - pending.delivered_at < min_idle or entry_id in skip:
                    continue
                fields = data.entries.get(entry_id)
                if fields is None:
                    del found.pending[entry_id]
                    gone.append(_format(entry_id))
                    continue
                pending.consumer, pending.delivered_at = consumer, now
                pending.deliveries += 1
                claimed.append(
                    StreamEntry(
                        id=_format(entry_id), payload=fields["e"], deliveries=pending.deliveries
                    )
                )
            return claimed, gone

    def dead_letter(
        self, stream: str, group: str, dlq: str, entry: StreamEntry, consumer: str, error: str
    ) -> bool:
        """Move ``entry`` to ``dlq`` and acknowledge it, atomically; like Redis, only
        while it is pending for ``consumer`` (False otherwise)."""
        with self._lock:
            data = self._streams.get(stream)
            found = data.groups.get(group) if data is not None else None
            if found is not None:
                pending = found.pending.get(_parse(entry.id))
                if pending is None or pending.consumer != consumer:
                    return False
            fields = {
                "e": entry.payload,
                "src": entry.id.encode(),
                "err": error.encode(),
                "n": str(entry.deliveries).encode(),
                "c": consumer.encode(),
                "g": group.encode(),
            }
            self.append(dlq, fields, None)
            if found is not None:
                found.pending.pop(_parse(entry.id), None)
            return True

    def group_info(self, stream: str, group: str, dlq: str) -> GroupInfo:
        """Backlog, pending, consumers and dead letters of a group."""
        with self._lock:
            data = self._streams.get(stream)
            found = data.groups.get(group) if data is not None else None
            dead = self._streams.get(dlq)
            dead_letters = len(dead.entries) if dead is not None else 0
            if data is None or found is None:
                return GroupInfo(
                    length=len(data.entries) if data is not None else 0,
                    pending=0,
                    consumers=0,
                    lag=None,
                    oldest_pending_age=None,
                    dead_letters=dead_letters,
                )
            oldest = next(iter(found.pending.values()), None)
            return GroupInfo(
                length=len(data.entries),
                pending=len(found.pending),
                consumers=len(found.consumers),
                lag=self._backlog(data, found),
                oldest_pending_age=None
                if oldest is None
                else time.monotonic() - min(p.delivered_at for p in found.pending.values()),
                dead_letters=dead_letters,
                trimmed_unread=max(0, data.added - found.read - self._backlog(data, found)),
            )

    # -- dead letters -----------------------------------------------------------------

    def dead_letters(self, dlq: str, count: int) -> list[DeadLetter]:
        """The oldest ``count`` dead letters."""
        with self._lock:
            dead = self._streams.get(dlq)
            items = list(dead.entries.items())[:count] if dead is not None else []
            return [
                DeadLetter(
                    id=_format(entry_id),
                    source_id=fields["src"].decode(),
                    payload=fields["e"],
                    error=fields["err"].decode(),
                    deliveries=int(fields["n"]),
                    consumer=fields["c"].decode(),
                )
                for entry_id, fields in items
            ]

    def replay(self, dlq: str, stream: str, ids: Sequence[str] | None) -> int:
        """Move dead letters (all, or ``ids``) back to the group stream."""
        with self._lock:
            dead = self._streams.get(dlq)
            if dead is None:
                return 0
            chosen = list(dead.entries) if ids is None else [_parse(i) for i in ids]
            moved = 0
            for entry_id in chosen:
                fields = dead.entries.pop(entry_id, None)
                if fields is not None:
                    self.append(stream, {"e": fields["e"]}, None)
                    moved += 1
            return moved

    def purge(self, dlq: str) -> int:
        """Delete every dead letter."""
        with self._lock:
            dead = self._streams.pop(dlq, None)
            return len(dead.entries) if dead is not None else 0

    # -- the registry -----------------------------------------------------------------

    def registry_set(self, key: str, group: str, spec: bytes) -> None:
        """HSET."""
        with self._lock:
            self._hashes.setdefault(key, {})[group] = spec

    def registry_all(self, key: str) -> dict[str, bytes]:
        """HGETALL."""
        with self._lock:
            return dict(self._hashes.get(key, {}))
