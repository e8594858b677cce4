""":class:`RecordingBus`: an :class:`~eventbus.EventBus` for tests, with no server.

It records what is published and runs handlers only when told to (:meth:`drain`),
in the caller's thread. What a handler gets is what a real bus would give it: the
same validation, the envelope encoded and decoded by the wire codec, Redis glob
matching, compiled filters, and one consumer per durable group. The state and the
delivery loop live in :mod:`eventbus.testing._engine`; this is the public facade.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from eventbus import (
    CheckResult,
    ClientInfo,
    ConfigurationError,
    DeadLetter,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    EventBusStats,
    GroupInfo,
    GroupOptions,
    GroupStats,
    HealthCheckResult,
    HealthStatus,
    InvalidNameError,
    PublishResult,
    Subscription,
    SubscriptionStats,
    ValidationError,
)
from eventbus._core.filters import compile_filter
from eventbus._core.names import user_room, validate_event_type, validate_group, validate_room
from eventbus._core.patterns import compile_pattern, validate_pattern
from eventbus.testing._assertions import Where, describe_events, describe_query, select
from eventbus.testing._engine import HOST, ErrorHook, GapHook, Record, Recorder

__all__ = ["RecordingBus"]

H = TypeVar("H", bound=Callable[..., Any])

# The same rule as EventBus.publish(event_id=...).
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TRANSPORT = "recording://"
_sub_ids = itertools.count(1)


class _RecordedSubscription(Subscription):
    """The :class:`~eventbus.Subscription` handle of a recording bus."""

    __slots__ = ("_owner", "_record")

    def __init__(self, bus: RecordingBus, record: Record) -> None:
        # Subscription.__init__ takes the real bus's runtime route; every member that
        # reads it is overridden here.
        self._owner = bus
        self._record = record

    @property
    def id(self) -> str:
        """The subscription id, for :meth:`RecordingBus.unsubscribe`."""
        return self._record.id

    @property
    def pattern(self) -> str:
        """The pattern this subscription matches event types with."""
        return self._record.pattern.source

    @property
    def handler(self) -> Callable[[Event], Any]:
        """The subscribed handler."""
        return self._record.handler

    @property
    def active(self) -> bool:
        """False once unsubscribed."""
        return self._record.active

    def stats(self) -> SubscriptionStats:
        """This subscription's counters now."""
        return self._owner._rec.record_stats(self._record)

    def unsubscribe(self) -> bool:
        """Stop receiving; False if already unsubscribed."""
        return self._owner.unsubscribe(self.id)


class RecordingBus(EventBus):
    """An :class:`~eventbus.EventBus` that records publishes and runs handlers on demand.

    Pass it wherever application code takes an ``EventBus`` (it is a subclass, so type
    hints accept it). Nothing leaves the process and no thread is started: published
    events are appended to :attr:`published`, and handlers run when :meth:`drain` is
    called, in the calling thread, in publish order. With ``eager=True`` each publish
    drains before it returns.

    Example::

        from eventbus.testing import RecordingBus

        with RecordingBus(service_name="photo-api") as bus:
            seen = []
            bus.subscribe("photo.*", seen.append)
            bus.publish("photo.uploaded", {"photoId": "123"})
            bus.assert_published("photo.uploaded", where={"photoId": "123"})
            assert bus.drain() == 1 and seen[0].data == {"photoId": "123"}

    Args:
        config: a configuration to take ``service_name``, ``max_event_size``,
            ``key_prefix`` and the retry defaults from; its transport is never used.
        service_name: shorthand for a default configuration with this service name
            (default ``"test"``); not together with ``config``.
        eager: run handlers inside each publish (see :meth:`drain`); also settable
            later as the ``eager`` attribute.

    Raises:
        ConfigurationError: both ``config`` and ``service_name`` were given, or an
            invalid ``service_name``.
    """

    def __init__(
        self,
        config: EventBusConfig | None = None,
        *,
        service_name: str | None = None,
        eager: bool = False,
    ) -> None:
        # EventBus.__init__ is not called on purpose: it builds the real bus's
        # transport-side machinery. Every public member is overridden here (a test
        # checks it), and the state is one attribute that EventBus does not use.
        if config is None:
            config = EventBusConfig(service_name=service_name or "test", url="memory://")
        elif service_name is not None:
            raise ConfigurationError("pass config or service_name to RecordingBus, not both")
        elif not isinstance(config, EventBusConfig):
            raise TypeError(f"config must be an EventBusConfig, got {type(config).__name__}")
        self._rec = Recorder(config)
        self.eager = bool(eager)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, service_name: str, **options: Any) -> RecordingBus:
        """A recording bus configured as :meth:`EventBus.from_url` would be; ``url`` is
        validated but never connected to."""
        return cls(EventBusConfig.from_url(url, service_name=service_name, **options))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> RecordingBus:
        """A recording bus configured from the environment, as :meth:`EventBus.from_env`."""
        return cls(EventBusConfig.from_env(environ, **options))

    @property
    def config(self) -> EventBusConfig:
        """The configuration this bus was made with."""
        return self._rec.config

    @property
    def client_id(self) -> str:
        """This bus's id, ``<service_name>:<host>:<pid>:<n>``."""
        return self._rec.client_id

    @property
    def service_name(self) -> str:
        """The service this bus publishes as (``event.source``)."""
        return self._rec.config.service_name

    # -- lifecycle ---------------------------------------------------------------------

    def connect(self) -> None:
        """Start recording; does nothing on a connected bus.

        Raises:
            BusClosedError: the bus was disconnected before.
        """
        self._rec.connect()

    def is_connected(self) -> bool:
        """True between :meth:`connect` and :meth:`disconnect`."""
        return self._rec.phase == "connected"

    def disconnect(self, timeout: float | None = None) -> None:
        """Close the bus. Unlike a real bus, pending deliveries are dropped (and
        counted), not run: call :meth:`drain` first. What was recorded stays readable."""
        self._rec.close()

    def __enter__(self) -> RecordingBus:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    # -- publishing --------------------------------------------------------------------

    def publish(
        self,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """Record an event for every subscription whose pattern matches ``event_type``.

        Validates exactly as :meth:`EventBus.publish` does; ``timeout`` is ignored.
        ``receivers`` in the result is how many subscriptions it was queued for.

        Raises:
            ValidationError: bad type, data, headers or size; nothing was recorded.
            BusStateError: the bus is not connected.
            HandlerError, FilterError, DrainLimitError: with ``eager=True``, as
                :meth:`drain` raises them (the event was recorded).
        """
        validate_event_type(event_type)
        return self._record(
            self._rec.keys.event_channel(event_type), event_type, data, headers, event_id
        )

    def publish_to_room(
        self,
        room: str,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """Record an event to ``room`` (``event.room``); it reaches this bus's handlers
        only if the bus joined the room (:meth:`join_room`), as on a real bus."""
        validate_room(room)
        validate_event_type(event_type)
        return self._record(
            self._rec.keys.room_channel(room), event_type, data, headers, event_id, room=room
        )

    def publish_to_user(
        self,
        user_id: str,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """Record an event to one user: room ``user:<id>``, with ``event.user`` set."""
        room = user_room(user_id)
        validate_event_type(event_type)
        return self._record(
            self._rec.keys.room_channel(room),
            event_type,
            data,
            headers,
            event_id,
            room=room,
            user=user_id,
        )

    def broadcast(
        self,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """Record a broadcast (``event.broadcast`` is True); it reaches every matching
        subscription, durable groups included."""
        validate_event_type(event_type)
        return self._record(
            self._rec.keys.broadcast_channel, event_type, data, headers, event_id, broadcast=True
        )

    def _record(
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
    ) -> PublishResult:
        if event_id is not None and (
            not isinstance(event_id, str) or _EVENT_ID.fullmatch(event_id) is None
        ):
            raise InvalidNameError(f"event_id must be 1-64 of A-Z a-z 0-9 _ -, got {event_id!r}")
        event, receivers = self._rec.send(
            channel,
            event_type,
            data,
            headers,
            event_id,
            room=room,
            user=user,
            broadcast=broadcast,
        )
        if self.eager and not self._rec.draining_here():
            self.drain()
        return PublishResult(
            event_id=event.id, receivers=receivers, event_type=event_type, channel=channel
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Return True: a recording bus never batches."""
        return True

    # -- what was published ------------------------------------------------------------

    @property
    def published(self) -> list[Event]:
        """Every event published on this bus, oldest first (a new list each time).

        Each is the :class:`~eventbus.Event` a subscriber would decode: ``room``,
        ``user`` and ``broadcast`` say how it was addressed.
        """
        with self._rec.lock:
            return list(self._rec.published)

    @property
    def errors(self) -> list[EventBusError]:
        """Every failure while draining, oldest first: :class:`~eventbus.HandlerError`
        and :class:`~eventbus.FilterError`, the original exception as ``__cause__``."""
        with self._rec.lock:
            return list(self._rec.errors)

    @property
    def pending(self) -> int:
        """Deliveries queued and not yet run by :meth:`drain`."""
        return len(self._rec.queue)

    def find_published(
        self,
        pattern: str = "*",
        *,
        where: Where = None,
        room: str | None = None,
        user: str | None = None,
    ) -> list[Event]:
        """The published events whose type matches ``pattern`` (Redis glob rules, as in
        :meth:`subscribe`) and that pass ``where``, oldest first.

        Args:
            pattern: a subscription pattern, e.g. ``photo.*``.
            where: a mapping that ``event.data`` must contain (nested mappings are
                subsets too), or a predicate ``Event -> bool``.
            room: only events published to this room (``user:<id>`` for a user).
            user: only events published to this user.

        Raises:
            InvalidPatternError: a bad pattern.
            ValidationError: ``where`` is neither a mapping nor a callable.
        """
        return select(self.published, pattern, where, room, user)

    def assert_published(
        self,
        pattern: str,
        *,
        where: Where = None,
        count: int | None = None,
        room: str | None = None,
        user: str | None = None,
    ) -> Event:
        """Assert that a matching event was published, and return the newest match.

        Example::

            event = bus.assert_published("photo.*", where={"photoId": "123"})
            bus.assert_published("notification.new", user="user-456", count=1)

        Args:
            pattern, where, room, user: as for :meth:`find_published`.
            count: the exact number of matching events; None means at least one.

        Raises:
            AssertionError: no match, or not ``count`` of them; the message lists
                every event that was published.
        """
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 1
        ):
            raise ValidationError(
                "count must be an integer >= 1 or None (assert_not_published checks for "
                f"none), got {count!r}"
            )
        published = self.published
        found = select(published, pattern, where, room, user)
        if found and (count is None or len(found) == count):
            return found[-1]
        wanted = "an event" if count is None else f"{count} event(s)"
        raise AssertionError(
            f"expected {wanted} matching {describe_query(pattern, where, room, user)}, "
            f"found {len(found)}.\n{describe_events(published, 'Published')}"
        )

    def assert_not_published(
        self,
        pattern: str = "*",
        *,
        where: Where = None,
        room: str | None = None,
        user: str | None = None,
    ) -> None:
        """Assert that no published event matches (arguments as for :meth:`find_published`).

        Raises:
            AssertionError: some did; the message lists them.
        """
        found = self.find_published(pattern, where=where, room=room, user=user)
        if found:
            raise AssertionError(
                f"expected no event matching {describe_query(pattern, where, room, user)}, "
                f"found {len(found)}.\n{describe_events(found, 'Matching')}"
            )

    def clear(self) -> None:
        """Forget what was published, pending deliveries and recorded errors.

        Subscriptions, rooms, hooks, dead letters and counters stay.
        """
        rec = self._rec
        with rec.lock:
            rec.published.clear()
            rec.queue.clear()
            rec.errors.clear()
            for group in rec.groups.values():
                group.backlog.clear()

    # -- running handlers --------------------------------------------------------------

    def drain(self, *, raise_errors: bool = True, limit: int = 10_000) -> int:
        """Run every pending delivery, and what their handlers publish, until none is left.

        Runs in the calling thread, in order: events in the order they were
        published, each to its subscriptions in the order they were made; events
        that handlers publish are queued behind. A failing handler is retried at once
        per its subscription's ``retry_on_error``/``max_retries`` (no backoff sleep);
        a durable group's event that still fails is delivered again, up to its
        ``max_deliveries``, then goes to :meth:`dead_letters`. Each failure goes to the
        :meth:`on_error` hooks and to :attr:`errors`. A handler's ``timeout`` is not
        enforced.

        Args:
            raise_errors: once everything ran, raise the first failure of this call
                (the others are in :attr:`errors`, and its notes say how many).
                False only records them.
            limit: the most deliveries to run, a guard against handlers that publish
                each other's events forever.

        Returns:
            How many deliveries reached a handler (an event handed to one
            subscription counts once, whatever its retries; a filtered one not).

        Raises:
            HandlerError: a handler failed its last attempt; its exception is
                ``__cause__``.
            FilterError: a subscription's filter raised; its exception is ``__cause__``.
            DrainLimitError: ``limit`` deliveries ran and more are pending.
            BusStateError: called from inside a handler.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError(f"limit must be an integer >= 1, got {limit!r}")
        ran, failures = self._rec.run(limit)
        if failures and raise_errors:
            first = failures[0]
            if len(failures) > 1:
                first.add_note(
                    f"drain() had {len(failures)} failures; this is the first, all are in "
                    "RecordingBus.errors"
                )
            raise first
        return ran

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        handler: Callable[[Event], Any],
        *,
        retry_on_error: bool = False,
        max_retries: int | None = None,
        timeout: float | None = None,
        filter: Mapping[str, Any] | Callable[[Event], bool] | None = None,  # noqa: A002
        concurrency: int = 1,
        group: str | None = None,
        group_options: GroupOptions | None = None,
    ) -> Subscription:
        """Run ``handler`` on :meth:`drain` for each later event whose type matches.

        Takes and validates the arguments of :meth:`EventBus.subscribe`. Events
        published before the subscription was made do not reach it (pub/sub keeps no
        history), except those that wait in a durable group with no consumer yet.
        ``timeout`` and ``concurrency`` are checked, not used: handlers run one at a
        time in the thread that drains. Of several subscriptions of one group, the
        oldest gets every event of the group.

        Raises:
            InvalidPatternError, InvalidFilterError, ValidationError: bad arguments,
                or ``group`` already has another pattern.
            BusClosedError: the bus was disconnected.
        """
        validate_pattern(pattern)
        if not callable(handler):
            raise ValidationError(f"handler must be callable, got {handler!r}")
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValidationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise ValidationError(f"timeout must be a number > 0 or None, got {timeout!r}")
        perf = self._rec.config.performance
        retries = perf.max_retries if max_retries is None else max_retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValidationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        compiled = compile_pattern(pattern)
        event_filter = compile_filter(filter)
        if group is not None:
            validate_group(group)
            group_options = GroupOptions() if group_options is None else group_options
            if not isinstance(group_options, GroupOptions):
                raise ValidationError(
                    f"group_options must be a GroupOptions, got {group_options!r}"
                )
            group_options.start_id()
        elif group_options is not None:
            raise ValidationError("group_options needs group=")
        record = Record(
            id=f"sub-rec-{next(_sub_ids)}",
            pattern=compiled,
            handler=handler,
            filter=event_filter,
            attempts=(retries if retry_on_error else 0) + 1,
            group=group,
            options=group_options,
        )
        self._rec.add(record)
        return _RecordedSubscription(self, record)

    def on(
        self,
        pattern: str,
        *,
        retry_on_error: bool = False,
        max_retries: int | None = None,
        timeout: float | None = None,
        filter: Mapping[str, Any] | Callable[[Event], bool] | None = None,  # noqa: A002
        concurrency: int = 1,
        group: str | None = None,
        group_options: GroupOptions | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`subscribe`, with the same options."""

        def decorate(handler: H) -> H:
            self.subscribe(
                pattern,
                handler,
                retry_on_error=retry_on_error,
                max_retries=max_retries,
                timeout=timeout,
                filter=filter,
                concurrency=concurrency,
                group=group,
                group_options=group_options,
            )
            return handler

        return decorate

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop a subscription; its pending deliveries are dropped. False if unknown.

        A durable group's pending events go to another subscription of the group, or
        wait for the next one, as they would on Redis.
        """
        return self._rec.remove(subscription_id)

    def subscriptions(self) -> list[Subscription]:
        """The active subscriptions, oldest first."""
        with self._rec.lock:
            records = list(self._rec.records.values())
        return [_RecordedSubscription(self, record) for record in records]

    # -- hooks -------------------------------------------------------------------------

    def on_error(self, hook: ErrorHook) -> ErrorHook:
        """Call ``hook(error, event)`` for each failure while draining, as a real bus
        would (:meth:`drain` raises it as well). Usable as a decorator."""
        self._rec.error_hooks.append(hook)
        return hook

    def on_gap(self, hook: GapHook) -> GapHook:
        """Accept a gap hook; a recording bus loses nothing, so it is never called."""
        self._rec.gap_hooks.append(hook)
        return hook

    # -- rooms -------------------------------------------------------------------------

    def join_room(self, room: str) -> None:
        """Receive events published to ``room`` from now on; appear in its members.

        Raises:
            InvalidNameError: ``room`` breaks the naming rules.
            BusClosedError: the bus was disconnected.
        """
        validate_room(room)
        with self._rec.lock:
            self._rec.require_open()
            self._rec.rooms[room] = None

    def leave_room(self, room: str) -> None:
        """Stop receiving ``room``'s events."""
        validate_room(room)
        with self._rec.lock:
            self._rec.rooms.pop(room, None)

    def get_room_members(self, room: str) -> list[str]:
        """``[client_id]`` if this bus joined ``room``, else ``[]``: nothing else exists.

        Raises:
            InvalidNameError: ``room`` breaks the naming rules.
            BusStateError: the bus is not connected.
        """
        validate_room(room)
        with self._rec.lock:
            self._rec.require_connected()
            return [self._rec.client_id] if room in self._rec.rooms else []

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this bus has joined."""
        with self._rec.lock:
            return frozenset(self._rec.rooms)

    # -- monitoring --------------------------------------------------------------------

    def get_clients(self) -> list[ClientInfo]:
        """This bus alone, as the one live client.

        Raises:
            BusStateError: the bus is not connected.
        """
        rec = self._rec
        with rec.lock:
            rec.require_connected()
            patterns = tuple(sorted({r.pattern.source for r in rec.records.values()}))
            rooms = tuple(sorted(rec.rooms))
        stats = self.get_stats().as_dict()
        del stats["subscriptions"]
        return [
            ClientInfo(
                client_id=rec.client_id,
                service_name=rec.config.service_name,
                host=HOST,
                pid=os.getpid(),
                transport=_TRANSPORT,
                subscriptions=patterns,
                rooms=rooms,
                stats=stats,
                expires_at=time.time() + rec.config.presence_ttl,
            )
        ]

    def get_groups(self) -> dict[str, GroupInfo]:
        """Every durable group subscribed on this bus, with its state here.

        Raises:
            BusStateError: the bus is not connected.
        """
        rec = self._rec
        with rec.lock:
            rec.require_connected()
            result = {}
            for name in sorted(rec.groups):
                group = rec.groups[name]
                pending = sum(1 for d in rec.queue if d.record.group == name)
                result[name] = GroupInfo(
                    length=len(group.backlog) + pending,
                    pending=pending,
                    consumers=sum(1 for r in rec.records.values() if r.group == name),
                    lag=len(group.backlog),
                    oldest_pending_age=None,
                    dead_letters=len(group.dead),
                    trimmed_unread=0,
                )
            return result

    def get_group_patterns(self) -> dict[str, str]:
        """Every durable group subscribed on this bus and its pattern.

        Raises:
            BusStateError: the bus is not connected.
        """
        with self._rec.lock:
            self._rec.require_connected()
            return {name: g.pattern.source for name, g in sorted(self._rec.groups.items())}

    def dead_letters(self, group: str, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` events of ``group`` that failed ``max_deliveries`` times.

        Raises:
            InvalidNameError: ``group`` breaks the naming rules.
        """
        validate_group(group)
        with self._rec.lock:
            known = self._rec.groups.get(group)
            return [] if known is None else list(known.dead[:count])

    def replay_dead_letters(self, group: str, ids: Sequence[str] | None = None) -> int:
        """Queue dead letters (all, or those ``ids``) for ``group`` again, as new
        deliveries; return how many. They run on the next :meth:`drain`."""
        validate_group(group)
        return self._rec.replay(group, ids)

    def purge_dead_letters(self, group: str) -> int:
        """Forget ``group``'s dead letters; return how many there were."""
        validate_group(group)
        with self._rec.lock:
            known = self._rec.groups.get(group)
            if known is None:
                return 0
            purged = len(known.dead)
            known.dead = []
            return purged

    def get_stats(self) -> EventBusStats:
        """A frozen snapshot of this bus's counters (latencies are not measured)."""
        rec = self._rec
        with rec.lock:
            values = dict(rec.counters)
            records = list(rec.records.values())
            groups = tuple(
                GroupStats(
                    group=record.group,
                    pattern=record.pattern.source,
                    consumer=f"{rec.client_id}:{record.id}",
                    in_flight=0,
                    read=record.read,
                    acked=record.acked,
                    redelivered=record.redelivered,
                    dead_lettered=record.dead_lettered,
                    lost=0,
                    backlog=len(rec.groups[record.group].backlog),
                    pending=sum(1 for d in rec.queue if d.record is record),
                    dead_letters=len(rec.groups[record.group].dead),
                )
                for record in records
                if record.group is not None
            )
            rooms = len(rec.rooms)
        return EventBusStats(
            events_published=values.get("events_published", 0),
            events_received=values.get("events_received", 0),
            events_handled=values.get("events_handled", 0),
            events_failed=values.get("events_failed", 0),
            events_retried=values.get("events_retried", 0),
            events_dropped=values.get("events_dropped", 0),
            events_filtered=values.get("events_filtered", 0),
            duplicates_dropped=values.get("duplicates_dropped", 0),
            filter_errors=values.get("filter_errors", 0),
            hook_errors=values.get("hook_errors", 0),
            events_redelivered=values.get("events_redelivered", 0),
            dead_lettered=values.get("dead_lettered", 0),
            active_subscriptions=len(records),
            rooms=rooms,
            subscriptions=tuple(rec.record_stats(record) for record in records),
            groups=groups,
            uptime=time.monotonic() - rec.started_at if rec.started_at else 0.0,
        )

    def health_check(self) -> HealthCheckResult:
        """``healthy`` while connected, else ``unhealthy``; never raises."""
        rec = self._rec
        status: HealthStatus = "healthy" if self.is_connected() else "unhealthy"
        detail = "recording bus, no server" if status == "healthy" else "not connected"
        return HealthCheckResult(
            status=status,
            uptime=time.monotonic() - rec.started_at if rec.started_at else 0.0,
            checks={"transport": CheckResult(status=status, detail=detail)},
            service_name=rec.config.service_name,
            client_id=rec.client_id,
            transport=_TRANSPORT,
        )

    def __repr__(self) -> str:
        rec = self._rec
        return (
            f"<RecordingBus {rec.config.service_name!r} {rec.phase}: "
            f"{len(rec.published)} published, {len(rec.queue)} pending>"
        )
