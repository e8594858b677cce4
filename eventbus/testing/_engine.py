"""The state and delivery loop behind :class:`~eventbus.testing.RecordingBus`.

:class:`Recorder` holds what was published, the subscriptions, rooms and durable
groups, and the queue of pending deliveries; :meth:`Recorder.run` hands them to
handlers in the calling thread. Arguments reach it validated by the facade.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import attrs

from eventbus import (
    BusClosedError,
    BusStateError,
    DeadLetter,
    Event,
    EventBusConfig,
    EventBusError,
    EventTooLargeError,
    FilterError,
    Gap,
    GroupOptions,
    HandlerError,
    SubscriptionStats,
    ValidationError,
)
from eventbus._core.envelope import SEAL_SIZE, decode, encode, new_event_id, seal, timestamp
from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import Pattern

__all__ = ["HOST", "Delivery", "DrainLimitError", "Group", "Record", "Recorder"]

log = logging.getLogger("eventbus.testing")

ErrorHook = Callable[[EventBusError, Event | None], Any]
GapHook = Callable[[Gap], Any]

HOST = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
_instances = itertools.count(1)
_dead_ids = itertools.count(1)
_DEDUPE_WINDOW = 10_000  # ids remembered, as a real bus's listener does


class DrainLimitError(BusStateError):
    """:meth:`RecordingBus.drain` hit its ``limit``: handlers keep publishing events.

    What is still pending stays queued; call ``drain()`` again to go on.

    Attributes:
        limit: the number of deliveries that ran.
        pending: deliveries still queued.
    """

    def __init__(self, message: str, *, limit: int, pending: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.pending = pending


@attrs.define(eq=False)
class Record:
    """One subscription of a recording bus, with its counters."""

    id: str
    pattern: Pattern
    handler: Callable[[Event], Any]
    filter: Callable[[Event], bool] | None
    attempts: int
    group: str | None
    options: GroupOptions | None
    active: bool = True
    received: int = 0
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0
    read: int = 0
    acked: int = 0
    redelivered: int = 0
    dead_lettered: int = 0


@attrs.define(eq=False)
class Group:
    """A durable group: its pattern, what waits for a consumer, its dead letters."""

    name: str
    pattern: Pattern
    backlog: deque[tuple[bytes, Event]] = attrs.field(factory=deque)
    dead: list[DeadLetter] = attrs.field(factory=list)


@attrs.frozen
class Delivery:
    """One event queued for one subscription (``delivery`` counts group deliveries)."""

    payload: bytes
    event: Event
    record: Record
    delivery: int = 1


class Recorder:
    """Everything a recording bus holds; thread-safe, handlers run outside its lock."""

    def __init__(self, config: EventBusConfig) -> None:
        self.config = config
        self.keys = Keyspace(prefix=config.key_prefix)
        self.client_id = f"{config.service_name}:{HOST}:{os.getpid()}:{next(_instances)}"
        self.lock = threading.RLock()
        self.phase: Literal["new", "connected", "closed"] = "new"
        self.started_at = 0.0
        self.records: dict[str, Record] = {}
        self.groups: dict[str, Group] = {}
        self.rooms: dict[str, None] = {}  # an ordered set
        self.queue: deque[Delivery] = deque()
        self.published: list[Event] = []
        self.errors: list[EventBusError] = []
        self.counters: dict[str, int] = {}
        self.error_hooks: list[ErrorHook] = []
        self.gap_hooks: list[GapHook] = []
        self._sequences: dict[str, Callable[[], int]] = {}
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._drain_lock = threading.Lock()
        self._draining: int | None = None  # ident of the thread inside run()

    # -- lifecycle ---------------------------------------------------------------------

    def connect(self) -> None:
        """Start recording; nothing on a connected bus; a closed one cannot."""
        with self.lock:
            self.require_open()
            if self.phase == "new":
                self.phase = "connected"
                self.started_at = time.monotonic()

    def close(self) -> None:
        """Close; pending deliveries are dropped and counted."""
        with self.lock:
            if self.phase == "closed":
                return
            self.phase = "closed"
            for delivery in self.queue:
                delivery.record.dropped += 1
            self.count("events_dropped", len(self.queue))
            self.queue.clear()

    def require_open(self) -> None:
        """Raise BusClosedError on a disconnected bus."""
        if self.phase == "closed":
            raise BusClosedError("this bus was disconnected; create a new RecordingBus")

    def require_connected(self) -> None:
        """Raise BusStateError (or BusClosedError) unless connected."""
        self.require_open()
        if self.phase != "connected":
            raise BusStateError("the bus is not connected: call connect() or use `with bus:`")

    def count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name`` (an :class:`EventBusStats` field)."""
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + amount

    # -- publishing --------------------------------------------------------------------

    def send(
        self,
        channel: str,
        event_type: str,
        data: Any,
        headers: Mapping[str, str] | None,
        event_id: str | None,
        *,
        room: str | None = None,
        user: str | None = None,
        broadcast: bool = False,
    ) -> tuple[Event, int]:
        """Encode, size-check, record and route one event, as a real publish would.

        Returns the event as subscribers decode it, and how many deliveries it made.
        """
        now_ns = time.time_ns()
        if event_id is None:
            event_id = new_event_id(now_ns)
        body = encode(
            event_id=event_id,
            event_type=event_type,
            source=self.config.service_name,
            moment=timestamp(now_ns),
            data=data,
            publisher=self.client_id,
            room=room,
            user=user,
            broadcast=broadcast,
            headers=headers,
        )
        limit = self.config.max_event_size
        if len(body) + SEAL_SIZE > limit:
            raise EventTooLargeError(
                f"event {event_type} is {len(body)} bytes encoded; the limit is {limit}",
                size=len(body),
                limit=limit,
            )
        with self.lock:
            self.require_connected()
            counter = self._sequences.get(channel)
            if counter is None:
                counter = self._sequences.setdefault(channel, itertools.count(1).__next__)
            payload = seal(body, counter())
            event = decode(payload, channel).event  # exactly what a subscriber decodes
            self.published.append(event)
            self.count("events_published")
            return event, self._route(payload, channel, event)

    def _route(self, payload: bytes, channel: str, event: Event) -> int:
        """Queue ``event`` for each subscription a real bus would hand it to (lock held)."""
        queued = 0
        if event.room is None or event.room in self.rooms:
            duplicate: dict[str, bool] = {}
            for record in self.records.values():
                if record.group is None and record.pattern.matches(event.type):
                    # A bus drops an event id that arrives again through the same
                    # pattern (plain publishes) or channel (rooms, broadcasts): a
                    # retried publish. Every subscription of that key gets it once.
                    key = channel if event.room or event.broadcast else record.pattern.source
                    if key not in duplicate:
                        duplicate[key] = self._seen_before(key, event.id)
                    if not duplicate[key]:
                        self.queue.append(Delivery(payload, event, record))
                        queued += 1
            self.count("duplicates_dropped", sum(duplicate.values()))
        if event.room is None:  # room and user events go to the room's members only
            for group in self.groups.values():
                if group.pattern.matches(event.type):
                    self._to_group(group, payload, event)
                    queued += 1
        return queued

    def _seen_before(self, key: str, event_id: str) -> bool:
        """Remember ``event_id`` under ``key``; True if it was there (lock held)."""
        marker = (key, event_id)
        if marker in self._recent:
            return True
        self._recent[marker] = None
        if len(self._recent) > _DEDUPE_WINDOW:
            self._recent.popitem(last=False)
        return False

    def _to_group(self, group: Group, payload: bytes, event: Event, delivery: int = 1) -> None:
        """Queue a group's event for its consumer, or keep it until one subscribes."""
        consumer = self.consumer(group.name)
        if consumer is None:
            group.backlog.append((payload, event))
        else:
            self.queue.append(Delivery(payload, event, consumer, delivery))

    def consumer(self, group: str) -> Record | None:
        """The group's oldest active subscription: it gets every event of the group."""
        for record in self.records.values():
            if record.group == group and record.active:
                return record
        return None

    # -- subscriptions -----------------------------------------------------------------

    def add(self, record: Record) -> None:
        """Start a subscription; a group's waiting events are queued for it.

        Raises:
            ValidationError: its group is known with another pattern.
            BusClosedError: the bus was disconnected.
        """
        with self.lock:
            self.require_open()
            if record.group is None:
                self.records[record.id] = record
                return
            group = self.groups.get(record.group)
            if group is None:
                group = self.groups[record.group] = Group(name=record.group, pattern=record.pattern)
            elif group.pattern.source != record.pattern.source:
                raise ValidationError(
                    f"group {record.group!r} is registered with pattern "
                    f"{group.pattern.source!r}, not {record.pattern.source!r}: a group has "
                    "one pattern"
                )
            self.records[record.id] = record
            while group.backlog:
                payload, event = group.backlog.popleft()
                self.queue.append(Delivery(payload, event, record))

    def remove(self, subscription_id: str) -> bool:
        """Stop a subscription: fan-out deliveries are dropped, a group's go to another
        consumer of the group (or wait for one). False if unknown."""
        with self.lock:
            record = self.records.pop(subscription_id, None)
            if record is None:
                return False
            record.active = False
            kept: deque[Delivery] = deque()
            for delivery in self.queue:
                if delivery.record is not record:
                    kept.append(delivery)
                elif record.group is None:
                    record.dropped += 1
                    self.count("events_dropped")
            moved = [d for d in self.queue if d.record is record and record.group is not None]
            self.queue = kept
            for delivery in moved:
                self._to_group(
                    self.groups[str(record.group)],
                    delivery.payload,
                    delivery.event,
                    delivery.delivery,
                )
            return True

    def record_stats(self, record: Record) -> SubscriptionStats:
        """The counters of one subscription now."""
        with self.lock:
            queued = sum(1 for delivery in self.queue if delivery.record is record)
        return SubscriptionStats(
            id=record.id,
            pattern=record.pattern.source,
            queued=queued,
            received=record.received,
            handled=record.handled,
            failed=record.failed,
            retried=record.retried,
            dropped=record.dropped,
        )

    # -- running handlers --------------------------------------------------------------

    def draining_here(self) -> bool:
        """True in the thread that is running handlers now."""
        return self._draining == threading.get_ident()

    def run(self, limit: int) -> tuple[int, list[EventBusError]]:
        """Run pending deliveries until none is left; (deliveries run, failures).

        Raises:
            DrainLimitError: ``limit`` deliveries ran and more are pending.
            BusStateError: called from a handler.
        """
        if self.draining_here():
            raise BusStateError("drain() was called from a handler; it runs after it returns")
        with self._drain_lock:
            self._draining = threading.get_ident()
            try:
                return self._run(limit)
            finally:
                self._draining = None

    def _run(self, limit: int) -> tuple[int, list[EventBusError]]:
        ran = 0
        failures: list[EventBusError] = []
        while True:
            with self.lock:
                if not self.queue:
                    return ran, failures
                if ran >= limit:
                    pending = len(self.queue)
                    error = DrainLimitError(
                        f"drain() ran {limit} deliveries and {pending} more are pending: "
                        "do handlers publish each other's events in a loop? (raise limit= "
                        "if not)",
                        limit=limit,
                        pending=pending,
                    )
                    if failures:
                        error.add_note(f"{len(failures)} failure(s) before it: see .errors")
                    raise error
                delivery = self.queue.popleft()
            if self._deliver(delivery, failures):
                ran += 1

    def _deliver(self, delivery: Delivery, failures: list[EventBusError]) -> bool:
        """Filter and handle one delivery; True if it reached the handler."""
        record = delivery.record
        if not record.active:
            return False
        event = delivery.event
        if record.group is not None:
            # As the group consumer delivers: attempt number = deliveries so far.
            event = attrs.evolve(event, group=record.group, delivery_attempt=delivery.delivery)
            record.read += 1
            if delivery.delivery > 1:
                record.redelivered += 1
                self.count("events_redelivered")
        if record.filter is not None:
            try:
                accepted = record.filter(event)
            except Exception as exc:
                self.count("filter_errors")
                error = FilterError(
                    f"filter of {record.id} ({record.pattern.source}) raised on event "
                    f"{event.id} ({event.type}): {exc!r}; the event was skipped",
                    subscription_id=record.id,
                    event_id=event.id,
                )
                error.__cause__ = exc
                self._report(error, event, failures)
                return False
            if not accepted:
                self.count("events_filtered")
                if record.group is not None:
                    record.acked += 1
                return False
        record.received += 1
        self.count("events_received")
        number = 1
        while True:
            current = (
                event
                if number == 1
                else attrs.evolve(event, delivery_attempt=event.delivery_attempt + number - 1)
            )
            try:
                record.handler(current)
            except Exception as exc:
                if number < record.attempts:  # retried at once: no backoff sleep in tests
                    record.retried += 1
                    self.count("events_retried")
                    number += 1
                    continue
                self._handler_failed(delivery, current, number, exc, failures)
                return True
            record.handled += 1
            self.count("events_handled")
            if record.group is not None:
                record.acked += 1
            return True

    def _handler_failed(
        self,
        delivery: Delivery,
        event: Event,
        attempts: int,
        exc: Exception,
        failures: list[EventBusError],
    ) -> None:
        record = delivery.record
        record.failed += 1
        self.count("events_failed")
        error = HandlerError(
            f"handler of subscription {record.id} ({record.pattern.source}) failed on event "
            f"{event.id} ({event.type}) after {attempts} attempt(s): {exc!r}",
            subscription_id=record.id,
            event_id=event.id,
            event_type=event.type,
            attempts=attempts,
        )
        error.__cause__ = exc
        self._report(error, event, failures)
        if record.group is None or record.options is None:
            return
        with self.lock:
            group = self.groups[record.group]
            if delivery.delivery < record.options.max_deliveries:
                # Redis leaves it pending and another read takes it over after
                # claim_idle; here it is queued again at once, behind what waits.
                self._to_group(group, delivery.payload, delivery.event, delivery.delivery + 1)
                return
            letter_id = f"{int(time.time() * 1000)}-{next(_dead_ids)}"
            group.dead.append(
                DeadLetter(
                    id=letter_id,
                    source_id=letter_id,
                    payload=delivery.payload,
                    error=repr(exc),
                    deliveries=delivery.delivery,
                    consumer=f"{self.client_id}:{record.id}",
                )
            )
            record.dead_lettered += 1
            self.count("dead_lettered")

    def _report(self, error: EventBusError, event: Event, failures: list[EventBusError]) -> None:
        """Record a failure and hand it to the error hooks (or the log), as a bus does."""
        with self.lock:
            self.errors.append(error)
        failures.append(error)
        if not self.error_hooks:
            log.error("%s", error, exc_info=error.__cause__ or error)
            return
        for hook in list(self.error_hooks):
            try:
                hook(error, event)
            except Exception:
                self.count("hook_errors")
                log.exception("error hook %r failed", hook)

    # -- durable group administration --------------------------------------------------

    def replay(self, group: str, ids: Sequence[str] | None) -> int:
        """Queue dead letters (all, or those ``ids``) again as new deliveries."""
        with self.lock:
            known = self.groups.get(group)
            if known is None:
                return 0
            chosen = [d for d in known.dead if ids is None or d.id in ids]
            known.dead = [d for d in known.dead if d not in chosen]
            for letter in chosen:
                event = decode(letter.payload, self.keys.group_stream(group)).event
                self._to_group(known, letter.payload, event)
            return len(chosen)
