"""Durable groups on Redis Streams: :class:`RedisGroupStore`.

It implements :class:`~eventbus._transports.base.GroupStore` (``transport.groups`` of
the Redis transport) on the connections of
:class:`~eventbus._transports.redis.pools.RedisPools`; the layout of the streams is in
docs/groups.md ("Redis layout") and docs/wire-format.md ("Durable groups"):

* every command runs on a connection of the caller's deadline (a command pool), sent
  and read directly (raw replies, no redis-py response callbacks), several commands
  per round trip where they belong together;
* ``group_read`` blocks in ``XREADGROUP ... BLOCK``, so it runs on a **read pool**
  whose socket timeout is the block time plus ``socket_timeout``: a hung server is
  still noticed, and a long block never borrows (or starves) a command pool. The
  transport's ``stop()`` closes the read pools too, which ends a read blocked at that
  moment with :class:`~eventbus.TransportConnectionError`.

What must hold together runs as one Lua script
(:mod:`eventbus._transports.redis.group_scripts`; keys of one group share a hash tag,
so each script is valid on Redis Cluster). The Redis behaviours relied on (checked
against 7.0 in ``tests/test_redis_streams.py``):

* ``XCLAIM`` of a pending entry whose data was deleted or trimmed returns nothing for it
  and drops it from the PEL; only an atomic ``XPENDING`` + ``XCLAIM`` tells such an
  entry from one that another consumer claimed or acknowledged meanwhile.
* ``XREADGROUP`` on a missing key or group fails with ``NOGROUP``; a read blocked while
  the key is deleted (``DEL``, ``FLUSHALL``) fails with ``UNBLOCKED ... no longer
  exists``, and while the group is destroyed with ``NOGROUP``.
* ``XDEL`` of an entry the group already read keeps ``XINFO GROUPS``' lag; deleting or
  trimming entries it has not read yet may turn the lag into nil, and before Redis 8
  a trim can leave it stale (redis/redis#13957): the backlog is counted instead.
* Redis 6.2 differs: a blocked read is not woken by ``DEL``/``FLUSHALL`` (it ends at
  its block time and the next read fails with ``NOGROUP``); an error inside a script
  comes back as ``Error running script ...: NOGROUP ...``; and streams have no read
  counters, so losses to retention cannot be counted.
* ``XGROUP CREATE ... $`` leaves the group's ``entries-read`` nil on Redis 7.0;
  ``XGROUP SETID ... ENTRIESREAD n`` sets it without moving the group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final

import redis
from redis.exceptions import NoScriptError

from eventbus._errors import TransportError
from eventbus._models import DeadLetter, GroupInfo
from eventbus._transports.base import StreamEntry, StreamTarget
from eventbus._transports.redis.compat import lend
from eventbus._transports.redis.errors import (
    check_reply,
    is_group_missing,
    map_error,
    map_refusal,
)
from eventbus._transports.redis.group_scripts import (
    BACKLOG,
    CLAIM,
    CREATE,
    DEAD_LETTER,
    PURGE,
    REPLAY,
    Script,
)
from eventbus._transports.redis.pools import RedisPools

__all__ = ["RedisGroupStore"]

logger = logging.getLogger("eventbus.transport")

#: The stream entry field that holds the envelope.
_PAYLOAD: Final = b"e"
#: Most entries one ``group_claim`` takes (Lua's ``unpack`` has a stack limit of ~8000).
_CLAIM_MAX: Final = 1000
#: Dead letters moved per ``replay`` script: each script blocks the server while it runs.
_REPLAY_CHUNK: Final = 500


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _fields(raw: Sequence[bytes] | None) -> dict[bytes, bytes]:
    """An entry's flat field/value list as a dict (an entry deleted meanwhile has none)."""
    return dict(zip(raw[::2], raw[1::2], strict=True)) if raw else {}


def _xadd(target: StreamTarget, payload: bytes) -> tuple[Any, ...]:
    if target.maxlen is None:
        return ("XADD", target.stream, "*", "e", payload)
    return ("XADD", target.stream, "MAXLEN", "~", target.maxlen, "*", "e", payload)


class RedisGroupStore:
    """:class:`~eventbus._transports.base.GroupStore` over Redis Streams, on the
    connections of :class:`~eventbus._transports.redis.pools.RedisPools`.

    Example::

        stream, dlq = (
            keyspace.group_stream("thumbnailer"),
            keyspace.dead_letter_stream("thumbnailer"),
        )
        groups = transport.groups
        groups.group_create(stream, "thumbnailer", "$", timeout=2.0)
        groups.route(channel, payload, [StreamTarget(stream=stream)], timeout=2.0)
        for entry in groups.group_read(stream, "thumbnailer", "worker-1", 10, block=1.0):
            handle(entry.payload)
            groups.group_ack(stream, "thumbnailer", [entry.id], timeout=2.0)

    Args:
        pools: where its connections come from.
    """

    def __init__(self, pools: RedisPools) -> None:
        self._pools = pools

    def _call(
        self, command: tuple[Any, ...], timeout: float, what: str, stream: str = "", group: str = ""
    ) -> Any:
        """One command's raw reply; a refusal raises (``GroupMissingError`` for a lost
        group when ``stream`` and ``group`` are given)."""
        return check_reply(self._pools.exchange([command], timeout, what)[0], what, stream, group)

    def _eval(
        self,
        script: Script,
        keys: Sequence[str],
        args: Iterable[Any],
        timeout: float,
        what: str,
        stream: str = "",
        group: str = "",
    ) -> Any:
        """Run ``script`` (``EVALSHA``, then ``EVAL`` if the server lacks it)."""
        tail = (len(keys), *keys, *args)
        reply = self._pools.exchange([("EVALSHA", script.sha, *tail)], timeout, what)[0]
        if isinstance(reply, NoScriptError):
            reply = self._pools.exchange([("EVAL", script.source, *tail)], timeout, what)[0]
        return check_reply(reply, what, stream, group)

    # -- routing ---------------------------------------------------------------------------

    def route(
        self, channel: str, payload: bytes, targets: Sequence[StreamTarget], timeout: float
    ) -> int:
        """PUBLISH ``payload`` on ``channel`` and XADD it to every target stream (field
        ``e``, ``MAXLEN ~`` when the target has one) in one round trip; never retried.

        Returns:
            How many subscriptions received the PUBLISH.

        Raises:
            PublishTimeoutError: no answer within ``timeout`` (it may have been carried out).
            TransportConnectionError: the server cannot be reached.
            TransportError: Redis refused a command (the others were carried out).
        """
        return self.route_many([(channel, payload, targets)], timeout)[0]

    def route_many(
        self,
        messages: Sequence[tuple[str, bytes, Sequence[StreamTarget]]],
        timeout: float,
    ) -> list[int]:
        """:meth:`route` for several messages, in order, in one pipeline; receivers per
        message. Raises as :meth:`route` does."""
        if not messages:
            return []
        commands: list[tuple[Any, ...]] = []
        publishes: list[int] = []  # where each PUBLISH's reply is
        for channel, payload, targets in messages:
            publishes.append(len(commands))
            commands.append(("PUBLISH", channel, payload))
            commands.extend(_xadd(target, payload) for target in targets)
        what = f"publish of {len(messages)} message(s) to {len(commands)} destination(s)"
        replies = self._pools.exchange(commands, timeout, what, publish=True)
        refused = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
        if refused is not None:
            raise TransportError(f"{what}: {refused}") from refused
        return [replies[i] for i in publishes]

    # -- consuming -------------------------------------------------------------------------

    def group_create(self, stream: str, group: str, start: str, timeout: float) -> bool:
        """``XGROUP CREATE stream group start MKSTREAM`` with the group's read counter
        set (Redis 7.0+; see ``group_scripts.CREATE``), in one script; False if the group existed.

        Raises:
            TransportError: Redis refused (``start`` is not an id, the key is no stream),
                or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"create group {group!r} on {stream!r}"
        return bool(self._eval(CREATE, [stream], [group, start], timeout, what))

    def group_read(
        self, stream: str, group: str, consumer: str, count: int, block: float
    ) -> list[StreamEntry]:
        """Up to ``count`` entries never delivered to the group (``XREADGROUP ... >``),
        waiting up to ``block`` seconds (0: not at all) for the first.

        Each entry returned is now pending for ``consumer`` with ``deliveries=1``. An
        entry without an envelope (written by someone else) is acknowledged, logged and
        skipped. Runs on a read pool whose socket timeout is ``block`` plus the config's
        ``socket_timeout``; a concurrent ``stop()`` ends the wait with
        :class:`~eventbus.TransportConnectionError`.

        Raises:
            GroupMissingError: the stream or the consumer group does not exist, or was
                deleted while the read waited (the caller recreates it).
            TransportError: no answer within the socket timeout; Redis refused.
            TransportConnectionError: the server cannot be reached.
            BusStateError: the transport is stopped.
        """
        pool, socket_timeout = self._pools.read_pool(block)
        command: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block > 0:  # BLOCK 0 would wait forever
            command += ["BLOCK", max(1, round(block * 1000))]
        command += ["STREAMS", stream, ">"]
        what = f"read group {group!r} of {stream!r}"
        generation = self._pools.generation
        try:
            conn: Any = lend(pool)
            try:
                conn.send_command(*command)
                reply = conn.read_response()
            finally:
                pool.release(conn)
        except redis.ResponseError as exc:
            raise map_refusal(exc, what, stream, group) from exc
        except redis.RedisError as exc:
            raise map_error(exc, what, socket_timeout) from exc
        except (OSError, ValueError, AttributeError) as exc:
            # stop() or disconnect() may have closed the socket under the read.
            severed = self._pools.severed(generation, what)
            if severed is None:
                raise
            raise severed from exc
        if not reply:  # nil: nothing arrived within the block time
            return []
        entries: list[StreamEntry] = []
        foreign: list[str] = []
        for raw_id, raw_fields in reply[0][1]:
            payload = _fields(raw_fields).get(_PAYLOAD)
            if payload is None:
                foreign.append(_text(raw_id))
            else:
                entries.append(StreamEntry(id=_text(raw_id), payload=payload, deliveries=1))
        self._drop_foreign(stream, group, foreign)
        return entries

    def _drop_foreign(self, stream: str, group: str, ids: list[str]) -> None:
        """Acknowledge entries that carry no envelope, so they do not come back; log them."""
        if ids:
            logger.warning(
                "stream %r has %d entr%s without an %r field, acknowledged and skipped: %s",
                stream,
                len(ids),
                "y" if len(ids) == 1 else "ies",
                _PAYLOAD.decode(),
                ", ".join(ids),
            )
            self.group_ack(stream, group, ids, self._pools.config.socket_timeout)

    def group_ack(self, stream: str, group: str, ids: Sequence[str], timeout: float) -> int:
        """``XACK``; return how many of ``ids`` were pending (0 for a missing stream).

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        if not ids:
            return 0
        what = f"acknowledge {len(ids)} entr(ies) of {stream!r}"
        acked: int = self._call(("XACK", stream, group, *ids), timeout, what, stream, group)
        return acked

    def group_claim(
        self,
        stream: str,
        group: str,
        consumer: str,
        min_idle: float,
        count: int,
        timeout: float,
        exclude: Sequence[str] = (),
    ) -> tuple[list[StreamEntry], list[str]]:
        """Take over up to ``count`` (at most 1000) entries pending for at least
        ``min_idle`` seconds with any consumer, oldest first, except the ids in
        ``exclude`` (still being handled by the caller: slow, not dead), in one atomic
        script: ``XPENDING ... IDLE`` then ``XCLAIM`` of those ids.

        Returns:
            The entries claimed, with ``deliveries`` counting this one (XPENDING's
            count + 1), and the ids that were pending but whose data is gone (trimmed
            or deleted): those are acknowledged, so they leave the pending list. An
            entry without an envelope is acknowledged, logged and left out of both.

        Raises:
            GroupMissingError: the stream or the consumer group does not exist.
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        idle_ms = max(0, round(min_idle * 1000))
        args = (group, consumer, idle_ms, max(1, min(count, _CLAIM_MAX)), *exclude)
        what = f"claim idle entries of group {group!r} on {stream!r}"
        pending, claimed, gone = self._eval(CLAIM, [stream], args, timeout, what, stream, group)
        counts = {raw[0]: int(raw[3]) for raw in pending}
        entries: list[StreamEntry] = []
        foreign: list[str] = []
        for raw in claimed:
            if not raw:  # a server that returns nil for a deleted entry
                continue
            payload = _fields(raw[1]).get(_PAYLOAD)
            if payload is None:
                foreign.append(_text(raw[0]))
                continue
            deliveries = counts.get(raw[0], 0) + 1
            entries.append(StreamEntry(id=_text(raw[0]), payload=payload, deliveries=deliveries))
        self._drop_foreign(stream, group, foreign)
        return entries, [_text(i) for i in gone]

    def dead_letter(
        self,
        stream: str,
        group: str,
        dlq: str,
        entry: StreamEntry,
        consumer: str,
        error: str,
        timeout: float,
    ) -> bool:
        """Move ``entry`` to the dead-letter stream and acknowledge it, in one script;
        False if it was not moved.

        The dead letter holds the envelope (``e``), the source id (``src``), the error
        (``err``), the deliveries (``n``), the consumer (``c``) and the group (``g``).
        The entry stays in the group stream (acknowledged), to be trimmed like any other.
        Nothing happens, with a warning, when the entry is no longer pending for
        ``consumer``: another consumer claimed it (and now owns it), or it was
        acknowledged. When the group itself is gone the dead letter is still written.

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"dead-letter {entry.id} of {stream!r} into {dlq!r}"
        args = (group, entry.id, consumer, entry.payload, error, entry.deliveries)
        moved = self._eval(DEAD_LETTER, [stream, dlq], args, timeout, what)
        if moved == 0:
            logger.warning(
                "%s: skipped, the entry is no longer pending for %r (another consumer "
                "claimed it, or it was acknowledged)",
                what,
                consumer,
            )
        elif moved == 2:
            logger.warning("%s: written, but group %r no longer exists", what, group)
        return bool(moved != 0)

    # -- inspection and dead letters -------------------------------------------------------

    def group_take_lost(self, stream: str, group: str, timeout: float) -> int | None:
        """What the group lost to retention since the last call, by any process: entries
        trimmed from its stream before it read them. Counted and folded into the group's
        read counter atomically (``group_scripts.BACKLOG``), so each loss is returned once.

        Returns:
            The count (0 when the stream or the group does not exist), or None when
            Redis cannot count it (before 7.0; or a group whose counter was unknown,
            which is set now and counts from here on).

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"count what group {group!r} lost on {stream!r}"
        reply = self._eval(BACKLOG, [stream], [group, "take"], timeout, what)
        if not reply:
            return 0
        return None if reply[1] < 0 else int(reply[1])

    def group_info(self, stream: str, group: str, dlq: str, timeout: float) -> GroupInfo:
        """The group's numbers: ``XINFO GROUPS`` (pending, consumers), ``XLEN`` of the
        stream and of the dead-letter stream and the idle time of the oldest pending
        entry (``XPENDING ... - + 1``) in one round trip, then the exact backlog and the
        loss not yet taken (``group_scripts.BACKLOG`` without taking it).

        A missing stream counts as empty; a missing group as one with nothing pending
        and no consumers, whose lag is unknown (None) unless the stream is empty.

        Raises:
            TransportError: Redis refused (a key is no stream), or did not answer
                within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"info of group {group!r} on {stream!r}"
        groups, length, dead, oldest = self._pools.exchange(
            [
                ("XINFO", "GROUPS", stream),
                ("XLEN", stream),
                ("XLEN", dlq),
                ("XPENDING", stream, group, "-", "+", 1),
            ],
            timeout,
            what,
        )
        if isinstance(groups, redis.ResponseError) and "no such key" in str(groups):
            groups = []
        if isinstance(oldest, redis.ResponseError) and is_group_missing(oldest):
            oldest = []
        for reply in (groups, length, dead, oldest):
            if isinstance(reply, redis.ResponseError):
                raise TransportError(f"{what}: {reply}") from reply
        mine = next(
            (info for info in map(_fields, groups) if info.get(b"name") == group.encode()), None
        )
        trimmed_unread: int | None = None
        if mine is None:
            pending, consumers, lag = 0, 0, (0 if length == 0 else None)
        else:
            pending, consumers = int(mine[b"pending"]), int(mine[b"consumers"])
            counted = self._eval(BACKLOG, [stream], [group, "peek"], timeout, what)
            lag = int(counted[0]) if counted else None
            if counted and counted[1] >= 0:
                trimmed_unread = int(counted[1])
        return GroupInfo(
            length=length,
            pending=pending,
            consumers=consumers,
            lag=lag,
            oldest_pending_age=int(oldest[0][2]) / 1000 if oldest else None,
            dead_letters=dead,
            trimmed_unread=trimmed_unread,
        )

    def dead_letters(self, dlq: str, count: int, timeout: float) -> list[DeadLetter]:
        """The oldest ``count`` dead letters (``XRANGE dlq - + COUNT count``).

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        if count <= 0:
            return []
        raw = self._call(("XRANGE", dlq, "-", "+", "COUNT", count), timeout, f"read {dlq!r}")
        letters: list[DeadLetter] = []
        for raw_id, raw_fields in raw:
            fields = _fields(raw_fields)
            deliveries = fields.get(b"n", b"0")
            letters.append(
                DeadLetter(
                    id=_text(raw_id),
                    source_id=_text(fields.get(b"src", b"")),
                    payload=fields.get(_PAYLOAD, b""),
                    error=_text(fields.get(b"err", b"")),
                    deliveries=int(deliveries) if deliveries.isdigit() else 0,
                    consumer=_text(fields.get(b"c", b"")),
                )
            )
        return letters

    def replay(self, dlq: str, stream: str, ids: Sequence[str] | None, timeout: float) -> int:
        """Append dead letters (all, or those ``ids``) to the group stream as new entries
        and delete them from the dead-letter stream; return how many moved.

        Runs one script per 500 dead letters; each dead letter is appended, then
        deleted, so a failure leaves nothing lost nor doubled. ``replay`` of all moves
        the dead letters present when it began, not those added meanwhile. An id that is
        not (or no longer) a dead letter is skipped.

        Raises:
            TransportError: Redis refused (e.g. an invalid id), or did not answer
                within ``timeout`` (the chunks before it were moved).
            TransportConnectionError: the server cannot be reached.
        """
        what = f"replay {dlq!r} into {stream!r}"
        moved = 0
        if ids is not None:
            for i in range(0, len(ids), _REPLAY_CHUNK):
                chunk = ids[i : i + _REPLAY_CHUNK]
                done, _ = self._eval(REPLAY, [dlq, stream], ("ids", *chunk), timeout, what)
                moved += int(done)
            return moved
        newest = self._call(("XREVRANGE", dlq, "+", "-", "COUNT", 1), timeout, what)
        if not newest:
            return 0
        start, end = "-", newest[0][0]
        while True:
            args = ("range", start, end, _REPLAY_CHUNK)
            done, last = self._eval(REPLAY, [dlq, stream], args, timeout, what)
            moved += int(done)
            if not last:
                return moved
            start = "(" + _text(last)

    def purge(self, dlq: str, timeout: float) -> int:
        """Delete the dead-letter stream; return how many dead letters it held.

        Raises:
            TransportError: Redis refused (the key is no stream), or did not answer
                within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        purged: int = self._eval(PURGE, [dlq], (), timeout, f"purge {dlq!r}")
        return purged

    # -- registry --------------------------------------------------------------------------

    def registry_set(self, key: str, group: str, spec: bytes, timeout: float) -> None:
        """Record ``group`` with its ``spec`` (JSON) in the registry hash (``HSET``).

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        self._call(("HSET", key, group, spec), timeout, f"register group {group!r}")

    def registry_all(self, key: str, timeout: float) -> dict[str, bytes]:
        """Every registered group and its spec (``HGETALL``).

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        raw = self._call(("HGETALL", key), timeout, f"read the group registry {key!r}")
        return {_text(name): spec for name, spec in _fields(raw).items()}
