"""Durable groups: routing publishes into group streams, and consuming them
(docs/groups.md; the choices behind them: docs/decisions.md, "Durable groups").

A group ``G`` subscribed with pattern ``P`` is registered in the registry hash. Every
publisher keeps the registry cached (:class:`GroupRouter`) and appends a copy of each
event whose type matches ``P`` to ``G``'s stream, in the same round trip as its
PUBLISH. In every process that subscribes with ``group=G``, a :class:`GroupConsumer`
thread reads the stream as one consumer of the consumer group ``G``, hands entries to
the handler pool, acknowledges each after its handler succeeded, takes over entries a
dead consumer left pending for ``claim_idle`` seconds, and moves an entry that was
delivered ``max_deliveries`` times without success to the dead-letter stream.
What users see of it is in docs/groups.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

import attrs

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.envelope import decode
from eventbus._core.keyspace import Keyspace
from eventbus._core.options import GroupOptions
from eventbus._core.patterns import Pattern, compile_pattern
from eventbus._core.stats import Counters
from eventbus._errors import (
    BusStateError,
    DecodeError,
    EventBusError,
    FilterError,
    GroupMissingError,
    TransportError,
)
from eventbus._models import Event, Gap, GroupStats
from eventbus._runtime.dispatch import Route
from eventbus._runtime.hooks import Hooks
from eventbus._runtime.wiring import Executor
from eventbus._transports.base import GroupStore, StreamEntry, StreamTarget

__all__ = ["GroupConsumer", "GroupRouter", "group_spec"]

log = logging.getLogger("eventbus.groups")

_CACHE_LIMIT = 10_000
#: Delays between a consumer's attempts after its reads failed.
_RETRY = ReconnectPolicy()


def group_spec(pattern: str, options: GroupOptions) -> bytes:
    """The registry entry of a group: its pattern and retention, as JSON."""
    return json.dumps({"pattern": pattern, "maxlen": options.maxlen}).encode()


class GroupRouter:
    """The publisher's cached registry: which group streams an event type goes to."""

    def __init__(self, keys: Keyspace) -> None:
        self._keys = keys
        self._groups: dict[str, tuple[Pattern, StreamTarget]] = {}
        self._cache: dict[str, tuple[StreamTarget, ...]] = {}
        self.patterns: dict[str, str] = {}

    def load(self, registry: Mapping[str, bytes]) -> None:
        """Replace the cached registry (tables are swapped, never mutated)."""
        groups: dict[str, tuple[Pattern, StreamTarget]] = {}
        for name, raw in registry.items():
            try:
                spec = json.loads(raw)
                pattern = str(spec["pattern"])
                maxlen = spec.get("maxlen")
                target = StreamTarget(
                    stream=self._keys.group_stream(name),
                    maxlen=int(maxlen) if maxlen is not None else None,
                )
                groups[name] = (compile_pattern(pattern), target)
            except (ValueError, KeyError, TypeError, EventBusError) as exc:
                log.warning("group %r has an unreadable registry entry %r: %r", name, raw, exc)
        self._groups = groups
        self._cache = {}
        self.patterns = {name: pattern.source for name, (pattern, _) in groups.items()}

    def targets(self, event_type: str) -> tuple[StreamTarget, ...]:
        """The streams an event of ``event_type`` is appended to (cached per type)."""
        found = self._cache.get(event_type)
        if found is None:
            found = tuple(t for p, t in self._groups.values() if p.matches(event_type))
            cache = self._cache
            if len(cache) >= _CACHE_LIMIT:
                cache = self._cache = {}
            cache[event_type] = found
        return found


class GroupConsumer:
    """One consumer of a durable group: a thread that reads, dispatches and acks."""

    def __init__(
        self,
        *,
        store: GroupStore,
        keys: Keyspace,
        group: str,
        route: Route,
        consumer: str,
        options: GroupOptions,
        dispatcher: Executor,
        hooks: Hooks,
        counters: Counters,
        timeout: float,
        register: Callable[[], None],
    ) -> None:
        self.group = group
        self.route = route
        self.consumer = consumer
        self.options = options
        self._store = store
        self._stream = keys.group_stream(group)
        self._dlq = keys.dead_letter_stream(group)
        self._dispatcher = dispatcher
        self._hooks = hooks
        self._counters = counters
        self._timeout = timeout
        self._register = register
        self._stop = threading.Event()
        self._room = threading.Condition()
        # id(event) -> (event, its entry). Keyed by the object the pool hands back to
        # done(), not by event id: two entries may carry one id (a replay, a publish
        # retried with event_id=). The event is kept so that its id() stays unique.
        self._in_flight: dict[int, tuple[Event, StreamEntry]] = {}
        self._to_ack: list[str] = []  # handled, to acknowledge at the next flush
        self._last_errors: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self.read = self.acked = self.redelivered = self.dead_lettered = self.lost = 0
        self.backlog: int | None = None
        self.pending: int | None = None
        self.dead_letters: int | None = None
        self._uncountable_reported = False  # the warning that losses cannot be counted

    def start(self) -> None:
        """Start the consumer thread."""
        self._thread = threading.Thread(
            target=self._run, name=f"eventbus-group-{self.group}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop reading (what was read is still handled and acknowledged)."""
        self._stop.set()
        with self._room:
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(timeout, self.options.block + self._timeout))
        self.flush_acks()

    def _count(self, name: str, amount: int = 1) -> None:
        """Bump one of this consumer's counters (handler threads and the consumer's)."""
        with self._room:
            setattr(self, name, getattr(self, name) + amount)

    def alive(self) -> bool:
        """Whether the consumer runs: not stopped, and its thread (if it has one) alive.

        An :class:`~eventbus._runtime.inline.InlineExecutor` runs the loop without a
        thread, by :meth:`poll`.
        """
        if self._stop.is_set():
            return False
        return self._thread is None or self._thread.is_alive()

    def stats(self) -> GroupStats:
        """This consumer's counters and the group's last known backlog."""
        return GroupStats(
            group=self.group,
            pattern=self.route.pattern.source,
            consumer=self.consumer,
            in_flight=len(self._in_flight),
            read=self.read,
            acked=self.acked,
            redelivered=self.redelivered,
            dead_lettered=self.dead_lettered,
            lost=self.lost,
            backlog=self.backlog,
            pending=self.pending,
            dead_letters=self.dead_letters,
        )

    # -- the completion side (handler threads) ----------------------------------------

    def done(self, event: Event, error: EventBusError | None) -> None:
        """A handler finished ``event``: acknowledge it, or leave it for redelivery, or
        give it up to the dead-letter stream after ``max_deliveries``."""
        found = self._in_flight.get(id(event))
        if found is None:
            return
        entry = found[1]
        try:
            self._settle(entry, error)
        except (TransportError, BusStateError) as exc:
            # Not acknowledged: the entry stays pending and is delivered again later.
            log.warning(
                "group %s: could not settle entry %s (%s); it will be delivered again",
                self.group,
                entry.id,
                exc,
            )
        finally:
            self._finished(event)

    def _settle(self, entry: StreamEntry, error: EventBusError | None) -> None:
        if error is None:
            # Acknowledged in batches by the consumer thread (flush_acks): one XACK per
            # read instead of one round trip per event. A crash before the flush only
            # means the entries are delivered again: still at least once.
            with self._room:
                self._to_ack.append(entry.id)
        elif entry.deliveries >= self.options.max_deliveries:
            self._dead_letter(entry, repr(error.__cause__ or error))
        else:
            # Left pending: it is taken over (by us or another consumer) after
            # claim_idle seconds and delivered again.
            self._last_errors[entry.id] = repr(error.__cause__ or error)

    def flush_acks(self) -> None:
        """Acknowledge every entry handled since the last flush, in one round trip.

        A failure leaves them pending (delivered again later) and is logged.
        """
        with self._room:
            ids, self._to_ack = self._to_ack, []
        if not ids:
            return
        try:
            self._store.group_ack(self._stream, self.group, ids, self._timeout)
        except (TransportError, BusStateError) as exc:
            log.warning(
                "group %s: could not acknowledge %d entries (%s); they will be delivered again",
                self.group,
                len(ids),
                exc,
            )
            return
        self._count("acked", len(ids))

    def _finished(self, event: Event) -> None:
        with self._room:
            self._in_flight.pop(id(event), None)
            self._room.notify_all()

    def _dead_letter(self, entry: StreamEntry, error: str) -> None:
        moved = self._store.dead_letter(
            self._stream, self.group, self._dlq, entry, self.consumer, error, self._timeout
        )
        self._last_errors.pop(entry.id, None)
        if not moved:
            return  # another consumer owns it now
        self._count("dead_lettered")
        self._counters.add("dead_lettered")
        log.warning(
            "group %s: entry %s went to the dead-letter stream after %d deliveries: %s",
            self.group,
            entry.id,
            entry.deliveries,
            error,
        )

    # -- the consumer thread ----------------------------------------------------------

    def poll(self, *, block: float, claim_idle: float | None) -> int:
        """One round of the consumer's loop, in the calling thread; how many new
        entries it read.

        Acknowledges what was handled; with ``claim_idle``, takes over entries pending
        that long with any consumer (except those in flight here) and refreshes the
        group's state; then reads new entries, waiting up to ``block`` seconds for
        room and for the first one. The thread of :meth:`start` calls it in a loop;
        an executor that runs handlers in its caller's thread calls it with
        ``block=0``.

        Raises:
            GroupMissingError, TransportError: the store failed (the thread's loop
                reports them and goes on).
        """
        self.flush_acks()
        if claim_idle is not None:
            self._claim(claim_idle)
            self._refresh_info()
        room = self._wait_for_room(block)
        if room <= 0 or self._stop.is_set():
            return 0  # still full: look at claims and the backlog again
        entries = self._store.group_read(
            self._stream, self.group, self.consumer, min(self.options.batch_size, room), block
        )
        for entry in entries:
            self._deliver(entry)
        return len(entries)

    def _run(self) -> None:
        failures = 0  # in a row; the delay before the next attempt grows with them
        next_claim = 0.0
        while not self._stop.is_set():
            try:
                claim_idle = None
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + min(self.options.claim_idle / 2, 5.0)
                    claim_idle = self.options.claim_idle
                self.poll(block=self.options.block, claim_idle=claim_idle)
                failures = 0
            except GroupMissingError as exc:
                log.warning(
                    "group %s: its stream or consumer group is gone (%s); Redis was flushed "
                    "or restarted without persistence: recreating it; events in it are lost",
                    self.group,
                    exc,
                )
                self._counters.add("groups_recreated")
                self._hooks.report_gap(
                    Gap(
                        reason="group",
                        detail=f"group {self.group}: its stream vanished and was recreated; "
                        "events that were in it are lost",
                        channel=self._stream,
                    )
                )
                self._hooks.report(exc, log_unhandled=False)
                failures += 1
                if not self._recover(failures):
                    break
            except TransportError as exc:
                self._counters.add("group_errors")
                log.warning("group %s: %s; retrying", self.group, exc)
                self._hooks.report(exc, log_unhandled=False)
                failures += 1
                if not _RETRY.wait(failures, self._stop):
                    break
            except Exception as exc:  # a bug: report it loudly, keep consuming
                self._counters.add("group_errors")
                log.exception("group %s: consumer failed; going on", self.group)
                self._hooks.report(
                    EventBusError(f"group {self.group}: consumer failed: {exc!r}"),
                    log_unhandled=False,
                )
                failures += 1
                if not _RETRY.wait(failures, self._stop):
                    break

    def _recover(self, failures: int) -> bool:
        """Recreate the group now; if that fails, wait before the next attempt. False
        when stopped meanwhile."""
        try:
            self._register()
        except TransportError as exc:
            log.warning("group %s: could not recreate it yet: %s", self.group, exc)
            return _RETRY.wait(failures, self._stop)
        return True

    def _wait_for_room(self, block: float) -> int:
        """Wait up to ``block`` seconds for a free slot; return the free slots."""
        with self._room:
            full = len(self._in_flight) >= self.options.max_in_flight
            if full and block > 0 and not self._stop.is_set():
                self._room.wait(block)
            return self.options.max_in_flight - len(self._in_flight)

    def _claim(self, min_idle: float) -> None:
        running = [entry.id for _, entry in list(self._in_flight.values())]
        # Take over no more than there is room for: claimed entries go to the pool like
        # read ones, and the route's queue holds max_in_flight.
        room = self.options.max_in_flight - len(running)
        if room <= 0:
            return
        entries, gone = self._store.group_claim(
            self._stream,
            self.group,
            self.consumer,
            min_idle,
            min(self.options.batch_size * 10, room),
            self._timeout,
            running,  # still being handled here: slow, not dead
        )
        if gone:
            self._count("lost", len(gone))
            self._counters.add("group_entries_lost", len(gone))
            self._hooks.report_gap(
                Gap(
                    reason="trimmed",
                    detail=f"group {self.group}: {len(gone)} unacknowledged event(s) were "
                    "trimmed from its stream by its retention before they were handled",
                    channel=self._stream,
                    missed=len(gone),
                )
            )
        for entry in entries:
            self._count("redelivered")
            self._counters.add("events_redelivered")
            if entry.deliveries > self.options.max_deliveries:
                error = self._last_errors.get(entry.id) or (
                    f"delivered {entry.deliveries - 1} times without being acknowledged"
                )
                self._dead_letter(entry, error)
                continue
            self._deliver(entry)

    def _refresh_info(self) -> None:
        info = self._store.group_info(self._stream, self.group, self._dlq, self._timeout)
        self.backlog, self.pending, self.dead_letters = info.lag, info.pending, info.dead_letters
        # Taken once across every consumer of the group, also one started after the
        # loss (a loss while every consumer was down is reported by the first back).
        missed = self._store.group_take_lost(self._stream, self.group, self._timeout)
        if missed is None:
            if not self._uncountable_reported:
                self._uncountable_reported = True
                log.warning(
                    "group %r: the server could not count the events its retention trimmed "
                    "before the group read them (Redis < 7.0 cannot: such losses go "
                    "unreported; a group made without a read counter is counted from now on)",
                    self.group,
                )
            return
        if missed > 0:
            self._count("lost", missed)
            self._counters.add("group_entries_lost", missed)
            self._hooks.report_gap(
                Gap(
                    reason="trimmed",
                    detail=f"group {self.group}: {missed} event(s) were trimmed from its "
                    "stream by its retention (maxlen) before the group read them",
                    channel=self._stream,
                    missed=missed,
                )
            )

    def _deliver(self, entry: StreamEntry) -> None:
        self._count("read")
        try:
            decoded = decode(entry.payload, self._stream)
        except DecodeError as exc:
            self._counters.add("decode_errors")
            self._hooks.report(exc)
            self._dead_letter(entry, f"undecodable: {exc}")
            return
        event = attrs.evolve(decoded.event, group=self.group, delivery_attempt=entry.deliveries)
        route = self.route
        if route.filter is not None:
            try:
                accepted = route.filter(event)
            except Exception as exc:
                accepted = False
                self._counters.add("filter_errors")
                failure = FilterError(
                    f"filter of {route.id} (group {self.group}) raised on event {event.id}: "
                    f"{exc!r}; the event was skipped",
                    subscription_id=route.id,
                    event_id=event.id,
                )
                failure.__cause__ = exc
                self._hooks.report(failure, event)
            if not accepted:
                self._counters.add("events_filtered")
                self._store.group_ack(self._stream, self.group, [entry.id], self._timeout)
                return
        with self._room:
            self._in_flight[id(event)] = (event, entry)
        self._counters.add("events_received")
        self._dispatcher.offer(route, event)
