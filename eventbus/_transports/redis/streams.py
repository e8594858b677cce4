"""Durable groups on Redis Streams (DESIGN §4, §6): :class:`RedisGroupStore`.

:class:`~eventbus._transports.redis.transport.RedisTransport` inherits this mixin, which implements
:class:`~eventbus._transports.base.GroupStore` with the transport's own connections:

* every command runs on a connection of the caller's deadline (``_pool_for(timeout)``),
  sent and read directly (raw replies, no redis-py response callbacks), several commands
  per round trip where they belong together;
* ``group_read`` blocks in ``XREADGROUP ... BLOCK``, so it runs on a **read pool** whose
  socket timeout is the block time plus ``socket_timeout``: a hung server is still
  noticed, and a long block never borrows (or starves) a command pool. ``stop()``
  closes the read pools too, which ends a read blocked at that moment with
  :class:`~eventbus.TransportConnectionError`.

What must hold together runs as one Lua script (keys of one group share a hash tag, so
each script is valid on Redis Cluster). A script stops at its first failing command,
where a MULTI would run the remaining ones; that is what keeps ``replay`` and ``purge``
from deleting what they did not copy or count. The Redis behaviours relied on (checked
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

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import redis
from redis.exceptions import NoScriptError

from eventbus._errors import (
    BusStateError,
    GroupMissingError,
    TransportConnectionError,
    TransportError,
    ValidationError,
)
from eventbus._transports.base import DeadLetter, GroupInfo, StreamEntry, StreamTarget
from eventbus._transports.redis.compat import lend

if TYPE_CHECKING:
    import threading

    from redis.connection import ConnectionPool

    from eventbus._core.config import RedisConfig

__all__ = ["RedisGroupStore"]

logger = logging.getLogger("eventbus.transport")

#: The stream entry field that holds the envelope.
_PAYLOAD: Final = b"e"
#: Most entries one ``group_claim`` takes (Lua's ``unpack`` has a stack limit of ~8000).
_CLAIM_MAX: Final = 1000
#: Dead letters moved per ``replay`` script: each script blocks the server while it runs.
_REPLAY_CHUNK: Final = 500
#: Distinct block times that get a read pool of their own; see ``_read_pool``.
_MAX_READ_POOLS: Final = 4
#: Error prefixes meaning the stream or its consumer group is gone.
_MISSING: Final = ("NOGROUP", "UNBLOCKED the stream key no longer exists")
#: What Redis < 7.0 puts before the error of a command that failed inside a script.
_SCRIPT_ERROR: Final = re.compile(r"Error running script \(call to f_[0-9a-f]+\): @\w+:\d+: ")


class _Script:
    """A Lua script run with ``EVALSHA``, loaded with ``EVAL`` on ``NOSCRIPT``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


# KEYS stream; ARGV group, consumer, min idle ms, count, ids to leave alone... Atomic, so
# that an id XPENDING listed and XCLAIM did not return can only be one whose data is gone
# (XCLAIM skips it, and since 7.0 drops it from the PEL; the XACK does so on older servers).
_CLAIM = _Script("""
local want, skip = tonumber(ARGV[4]), {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local rows = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', want + #ARGV - 4)
local pending, ids = {}, {}
for _, p in ipairs(rows) do
  if #ids < want and not skip[p[1]] then pending[#pending + 1] = p; ids[#ids + 1] = p[1] end
end
if #ids == 0 then return {{}, {}, {}} end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ids))
local got, gone = {}, {}
for _, e in ipairs(claimed) do if type(e) == 'table' then got[e[1]] = true end end
for _, id in ipairs(ids) do if not got[id] then gone[#gone + 1] = id end end
if #gone > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(gone)) end
return {pending, claimed, gone}
""")

# KEYS stream, dlq; ARGV group, id, consumer, payload, error, deliveries. Moves the entry
# only while it is pending for this consumer: if another one claimed it meanwhile, that
# one owns it now (acking it here would cut its delivery short). 1 moved, 0 not ours,
# 2 moved with the group gone (nothing left to acknowledge).
_DEAD_LETTER = _Script("""
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
local missing = type(p) == 'table' and p.err ~= nil
if missing and string.sub(p.err, 1, 7) ~= 'NOGROUP' then return redis.error_reply(p.err) end
if not missing and (#p == 0 or p[1][2] ~= ARGV[3]) then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[4], 'src', ARGV[2], 'err', ARGV[5],
           'n', ARGV[6], 'c', ARGV[3], 'g', ARGV[1])
if missing then return 2 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
""")

# KEYS dlq, stream; ARGV 'ids' id... | 'range' start end count. Each dead letter is
# appended to the stream, then deleted, one at a time: a failure stops the script with
# nothing lost. Returns {moved, last id looked at (or false)}.
_REPLAY = _Script("""
local moved, last = 0, false
local function move(entry)
  last = entry[1]
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == 'e' then
      redis.call('XADD', KEYS[2], '*', 'e', f[i + 1])
      redis.call('XDEL', KEYS[1], entry[1])
      moved = moved + 1
      return
    end
  end
end
if ARGV[1] == 'ids' then
  for i = 2, #ARGV do
    local r = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if r[1] then move(r[1]) end
  end
else
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', ARGV[4])) do
    move(e)
  end
end
return {moved, last}
""")

# Shared by the scripts below: the fields of an XINFO reply, and stream id order.
_LUA_COMMON = """
local function fields(flat)
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local function before(a, b)  -- id a < id b; compared as digit strings (ids pass 2^53)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
"""

# KEYS stream; ARGV group, start. XGROUP CREATE ... MKSTREAM, and on Redis 7.0+ the
# group's read counter (entries-read) set to what it starts after: every entry added
# so far for "$"; for an id, the entries trimmed before now plus those still in the
# stream up to the id (counted 1000 at a time). Redis 7.0 leaves the counter nil for
# "$", and a nil counter makes a later loss to retention uncountable. 0 if it existed.
_CREATE = _Script(
    _LUA_COMMON
    + """
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(made) == 'table' and made.err then
  if string.sub(made.err, 1, 9) == 'BUSYGROUP' then return 0 end
  return redis.error_reply(made.err)
end
local s = fields(redis.call('XINFO', 'STREAM', KEYS[1]))
local added = s['entries-added']
if added == nil then return 1 end  -- before Redis 7.0: no read counters
local read = added
if ARGV[2] ~= '$' then
  local upto, cursor = 0, '-'
  while true do
    local rows = redis.call('XRANGE', KEYS[1], cursor, ARGV[2], 'COUNT', 1000)
    upto = upto + #rows
    if #rows < 1000 then break end
    cursor = '(' .. rows[#rows][1]
  end
  read = added - s['length'] + upto
end
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2], 'ENTRIESREAD', read)
return 1
"""
)

# KEYS stream; ARGV group, 'take' | 'peek'. The group's exact backlog (entries after
# its last-delivered id: Redis < 8 reports a stale lag after a trim, redis/redis#13957)
# and what it lost to retention: entries trimmed (or deleted) before it read them,
# (entries-added - entries-read) - backlog. With 'take', the loss is folded into the
# group's read counter (XGROUP SETID at its own id, ENTRIESREAD), so that each loss is
# returned once, to one caller. The backlog is counted from whichever end of the stream
# is nearer the group's id, 1000 entries at a time. Returns {backlog, lost}, lost -1
# when it cannot be counted (Redis < 7.0, or a nil counter: 'take' sets it, counting
# from now on), or false when the stream or the group does not exist.
_BACKLOG = _Script(
    _LUA_COMMON
    + """
local raw = redis.pcall('XINFO', 'STREAM', KEYS[1])
if type(raw) == 'table' and raw.err then
  if string.find(raw.err, 'no such key', 1, true) then return false end
  return redis.error_reply(raw.err)
end
local s = fields(raw)
local g = nil
for _, row in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = fields(row)
  if f['name'] == ARGV[1] then g = f end
end
if g == nil then return false end
local at, length = g['last-delivered-id'], s['length']
local backlog
if length == 0 or not before(at, s['last-entry'][1]) then
  backlog = 0
elseif before(at, s['first-entry'][1]) then
  backlog = length
else
  local upto, after, low, high = 0, 0, '-', '+'
  while true do
    local rows = redis.call('XRANGE', KEYS[1], low, at, 'COUNT', 1000)
    upto = upto + #rows
    if #rows < 1000 then backlog = length - upto; break end
    low = '(' .. rows[#rows][1]
    rows = redis.call('XREVRANGE', KEYS[1], high, '(' .. at, 'COUNT', 1000)
    after = after + #rows
    if #rows < 1000 then backlog = after; break end
    high = '(' .. rows[#rows][1]
  end
end
local added, read = s['entries-added'], g['entries-read']
if added == nil then return {backlog, -1} end
local gap = read and (added - read - backlog)
if ARGV[2] == 'take' and gap ~= 0 then
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], at, 'ENTRIESREAD', added - backlog)
end
if not read then return {backlog, -1} end
return {backlog, math.max(0, gap)}
"""
)

# KEYS dlq. XLEN fails on a key of another type, before anything is deleted.
_PURGE = _Script("""
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
""")


def _fail(
    exc: redis.RedisError, what: str, timeout: float, *, publish: bool = False
) -> TransportError:
    """The eventbus error for a redis-py error (the caller chains it with ``from``)."""
    # redis.py imports this module for RedisGroupStore: take its mapping at call time.
    from eventbus._transports.redis.transport import _error

    return _error(exc, what, timeout, publish=publish)


def _missing(exc: redis.ResponseError) -> bool:
    """Whether Redis refused because the stream or its consumer group is gone, also from
    inside a script (which Redis < 7.0 reports as ``Error running script ...: NOGROUP``)."""
    text = str(exc)
    script = _SCRIPT_ERROR.match(text)
    return text[script.end() if script else 0 :].startswith(_MISSING)


def _refused(exc: redis.ResponseError, what: str, stream: str, group: str) -> TransportError:
    """The eventbus error for a command Redis refused; a lost group is its own error."""
    if _missing(exc):
        return GroupMissingError(
            f"{what}: the stream or its consumer group is gone ({exc})", stream=stream, group=group
        )
    return TransportError(f"{what}: {exc}")


def _checked(reply: Any, what: str, stream: str, group: str) -> Any:
    """``reply``, or the error for it if Redis refused the command."""
    if isinstance(reply, redis.ResponseError):
        if stream:
            raise _refused(reply, what, stream, group) from reply
        raise TransportError(f"{what}: {reply}") from reply
    return reply


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
    """:class:`~eventbus._transports.base.GroupStore` over Redis Streams; a mixin of
    :class:`~eventbus._transports.redis.transport.RedisTransport`, using its connections.

    Example::

        stream, dlq = (
            keyspace.group_stream("thumbnailer"),
            keyspace.dead_letter_stream("thumbnailer"),
        )
        transport.group_create(stream, "thumbnailer", "$", timeout=2.0)
        transport.route(channel, payload, [StreamTarget(stream=stream)], timeout=2.0)
        for entry in transport.group_read(stream, "thumbnailer", "worker-1", 10, block=1.0):
            handle(entry.payload)
            transport.group_ack(stream, "thumbnailer", [entry.id], timeout=2.0)
    """

    if TYPE_CHECKING:  # provided by RedisTransport
        _config: RedisConfig
        _lock: threading.Lock
        _state: str
        _pools: dict[float, ConnectionPool]

        def _make_pool(self, socket_timeout: float, max_connections: int) -> ConnectionPool: ...
        def _pool_for(self, timeout: float) -> ConnectionPool: ...

    _read_pools: dict[float, ConnectionPool]

    def _init_group_store(self) -> None:
        """Set up the mixin's state; called by ``RedisTransport.__init__``."""
        # Read without a lock; replaced (never mutated) under the transport's lock.
        self._read_pools = {}

    def _take_read_pools(self) -> list[ConnectionPool]:
        """Forget the read pools and return them to be closed; ``stop()`` holds the lock."""
        pools, self._read_pools = list(self._read_pools.values()), {}
        return pools

    # -- connections -----------------------------------------------------------------------

    def _read_pool(self, block: float) -> tuple[ConnectionPool, float]:
        """The read pool for a ``block``-second read, and its socket timeout.

        Past ``_MAX_READ_POOLS`` block times, a read borrows the pool of the nearest
        longer one (a longer socket timeout only notices a hung server later).
        """
        if not isinstance(block, int | float) or not block >= 0:
            raise ValidationError(f"block must be a number >= 0, got {block!r}")
        socket_timeout = block + self._config.socket_timeout
        pool = self._read_pools.get(socket_timeout)
        if pool is not None:
            return pool, socket_timeout
        with self._lock:
            if self._state == "stopped":
                raise BusStateError("the Redis transport is stopped")
            pool = self._read_pools.get(socket_timeout)
            if pool is not None:
                return pool, socket_timeout
            longer = [t for t in self._read_pools if t >= socket_timeout]
            if len(self._read_pools) >= _MAX_READ_POOLS and longer:
                return self._read_pools[min(longer)], min(longer)
            pool = self._make_pool(socket_timeout, self._config.max_connections)
            self._read_pools = {**self._read_pools, socket_timeout: pool}
            return pool, socket_timeout

    def _exchange(
        self,
        commands: Sequence[tuple[Any, ...]],
        timeout: float,
        what: str,
        *,
        publish: bool = False,
    ) -> list[Any]:
        """Send ``commands`` in one round trip on a connection of deadline ``timeout``.

        Returns every raw reply in order; a command Redis refused has its
        :class:`redis.ResponseError` in its place (the others were carried out).
        """
        pool = self._pools.get(timeout)
        if pool is None:
            pool = self._pool_for(timeout)
        replies: list[Any] = []
        try:
            conn: Any = lend(pool)  # redis-py's Connection is untyped
            try:
                conn.send_packed_command(conn.pack_commands(commands))
                for _ in commands:
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:  # read the other replies all the same
                        replies.append(exc)
            finally:
                pool.release(conn)
        except redis.RedisError as exc:
            raise _fail(exc, what, timeout, publish=publish) from exc
        return replies

    def _call(
        self, command: tuple[Any, ...], timeout: float, what: str, stream: str = "", group: str = ""
    ) -> Any:
        """One command's raw reply; a refusal raises (``GroupMissingError`` for a lost
        group when ``stream`` and ``group`` are given)."""
        return _checked(self._exchange([command], timeout, what)[0], what, stream, group)

    def _eval(
        self,
        script: _Script,
        keys: Sequence[str],
        args: Iterable[Any],
        timeout: float,
        what: str,
        stream: str = "",
        group: str = "",
    ) -> Any:
        """Run ``script`` (``EVALSHA``, then ``EVAL`` if the server lacks it)."""
        tail = (len(keys), *keys, *args)
        reply = self._exchange([("EVALSHA", script.sha, *tail)], timeout, what)[0]
        if isinstance(reply, NoScriptError):
            reply = self._exchange([("EVAL", script.source, *tail)], timeout, what)[0]
        return _checked(reply, what, stream, group)

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
        replies = self._exchange(commands, timeout, what, publish=True)
        refused = next((r for r in replies if isinstance(r, redis.ResponseError)), None)
        if refused is not None:
            raise TransportError(f"{what}: {refused}") from refused
        return [replies[i] for i in publishes]

    # -- consuming -------------------------------------------------------------------------

    def group_create(self, stream: str, group: str, start: str, timeout: float) -> bool:
        """``XGROUP CREATE stream group start MKSTREAM`` with the group's read counter
        set (Redis 7.0+; see ``_CREATE``), in one script; False if the group existed.

        Raises:
            TransportError: Redis refused (``start`` is not an id, the key is no stream),
                or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"create group {group!r} on {stream!r}"
        return bool(self._eval(_CREATE, [stream], [group, start], timeout, what))

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
        pool, socket_timeout = self._read_pool(block)
        command: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block > 0:  # BLOCK 0 would wait forever
            command += ["BLOCK", max(1, round(block * 1000))]
        command += ["STREAMS", stream, ">"]
        what = f"read group {group!r} of {stream!r}"
        try:
            conn: Any = lend(pool)
            try:
                conn.send_command(*command)
                reply = conn.read_response()
            finally:
                pool.release(conn)
        except redis.ResponseError as exc:
            raise _refused(exc, what, stream, group) from exc
        except redis.RedisError as exc:
            raise _fail(exc, what, socket_timeout) from exc
        except (OSError, ValueError, AttributeError) as exc:
            if self._state != "stopped":
                raise
            # stop() closed the socket under the read (redis-py then fails in its buffer)
            raise TransportConnectionError(f"{what}: the Redis transport stopped") from exc
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
            self.group_ack(stream, group, ids, self._config.socket_timeout)

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
        pending, claimed, gone = self._eval(_CLAIM, [stream], args, timeout, what, stream, group)
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
        moved = self._eval(_DEAD_LETTER, [stream, dlq], args, timeout, what)
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
        read counter atomically (``_BACKLOG``), so each loss is returned once.

        Returns:
            The count (0 when the stream or the group does not exist), or None when
            Redis cannot count it (before 7.0; or a group whose counter was unknown,
            which is set now and counts from here on).

        Raises:
            TransportError: Redis refused, or did not answer within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"count what group {group!r} lost on {stream!r}"
        reply = self._eval(_BACKLOG, [stream], [group, "take"], timeout, what)
        if not reply:
            return 0
        return None if reply[1] < 0 else int(reply[1])

    def group_info(self, stream: str, group: str, dlq: str, timeout: float) -> GroupInfo:
        """The group's numbers: ``XINFO GROUPS`` (pending, consumers), ``XLEN`` of the
        stream and of the dead-letter stream and the idle time of the oldest pending
        entry (``XPENDING ... - + 1``) in one round trip, then the exact backlog and the
        loss not yet taken (``_BACKLOG`` without taking it).

        A missing stream counts as empty; a missing group as one with nothing pending
        and no consumers, whose lag is unknown (None) unless the stream is empty.

        Raises:
            TransportError: Redis refused (a key is no stream), or did not answer
                within ``timeout``.
            TransportConnectionError: the server cannot be reached.
        """
        what = f"info of group {group!r} on {stream!r}"
        groups, length, dead, oldest = self._exchange(
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
        if isinstance(oldest, redis.ResponseError) and _missing(oldest):
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
            counted = self._eval(_BACKLOG, [stream], [group, "peek"], timeout, what)
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
                done, _ = self._eval(_REPLAY, [dlq, stream], ("ids", *chunk), timeout, what)
                moved += int(done)
            return moved
        newest = self._call(("XREVRANGE", dlq, "+", "-", "COUNT", 1), timeout, what)
        if not newest:
            return 0
        start, end = "-", newest[0][0]
        while True:
            args = ("range", start, end, _REPLAY_CHUNK)
            done, last = self._eval(_REPLAY, [dlq, stream], args, timeout, what)
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
        purged: int = self._eval(_PURGE, [dlq], (), timeout, f"purge {dlq!r}")
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
