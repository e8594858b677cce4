"""The :class:`EventBus` facade: lifecycle, publishing, subscriptions, rooms, health."""

from __future__ import annotations

import enum
import itertools
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from eventbus._core.config import EventBusConfig
from eventbus._core.envelope import seal
from eventbus._core.keyspace import Keyspace
from eventbus._core.names import validate_group, validate_room
from eventbus._core.options import GroupOptions, SubscribeOptions
from eventbus._core.outgoing import Outgoing, Sender, prepare
from eventbus._core.retry import RetryPolicy
from eventbus._core.stats import Counters, LatencyWindow
from eventbus._errors import (
    BusClosedError,
    BusStateError,
    TransportError,
)
from eventbus._models import (
    ClientInfo,
    DeadLetter,
    Event,
    EventBusStats,
    GroupInfo,
    HealthCheckResult,
    PublishResult,
)
from eventbus._runtime.batch import Batcher
from eventbus._runtime.dispatch import Dispatcher, ErrorReporter, Route
from eventbus._runtime.group_manager import GroupManager
from eventbus._runtime.health import HEALTH_PING_TIMEOUT, check_health, worst
from eventbus._runtime.hooks import ErrorHook, GapHook, Hooks
from eventbus._runtime.presence import Presence
from eventbus._runtime.receiver import Receiver
from eventbus._runtime.subscription import Subscription
from eventbus._runtime.wiring import Executor, Meters, Wiring
from eventbus._transports import create_transport
from eventbus._transports.base import Transport

__all__ = ["THREADED", "EventBus", "ThreadedWiring", "wire"]

log = logging.getLogger("eventbus")

H = TypeVar("H", bound=Callable[..., Any])

_HOST = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
_instances = itertools.count(1)
_sub_ids = itertools.count(1)
_MAX_SEQUENCE_CHANNELS = 10_000


_live_buses: weakref.WeakSet[EventBus] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for bus in list(_live_buses):
        bus._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _State(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    CLOSING = "closing"  # disconnect() runs: handlers finish and may still publish
    CLOSED = "closed"


_ENDED = (_State.CLOSING, _State.CLOSED)


class ThreadedWiring:
    """A bus's usual :class:`~eventbus._runtime.wiring.Wiring`: the transport its URL
    names, and a :class:`Dispatcher` thread pool."""

    def new_transport(
        self, config: EventBusConfig, *, client_name: str, control_channel: str
    ) -> Transport:
        """The transport of ``config.redis`` or ``config.url`` (``memory://`` if unset)."""
        return create_transport(
            None if config.redis is not None else config.url or "memory://",
            redis=config.redis,
            client_name=client_name,
            control_channel=control_channel,
            client=config.client,
        )

    def new_executor(
        self, config: EventBusConfig, meters: Meters, report: ErrorReporter
    ) -> Executor:
        """A pool of ``config.handler_threads`` threads."""
        return Dispatcher(
            threads=config.handler_threads,
            counters=meters.counters,
            handler_latency=meters.handler_latency,
            delivery_latency=meters.delivery_latency,
            report=report,
        )


#: The wiring of every bus that :func:`wire` did not give another one.
THREADED = ThreadedWiring()


class EventBus:
    """Publish events, subscribe handlers, join rooms; one per service process.

    Example::

        from eventbus import EventBus

        with EventBus.from_url("redis://localhost:6379/0", service_name="photo-api") as bus:

            @bus.on("photo.*")
            def on_photo(event):
                print(event.type, event.data)

            bus.publish("photo.uploaded", {"photoId": "123"})

    The bus is thread-safe. Handlers run on a thread pool, never on the caller's
    thread; errors in them go to :meth:`on_error` hooks (or the log), never up.

    Args:
        config: what to connect to and how; see :class:`EventBusConfig`.
    """

    def __init__(self, config: EventBusConfig) -> None:
        if not isinstance(config, EventBusConfig):
            raise TypeError(f"config must be an EventBusConfig, got {type(config).__name__}")
        self._config = config
        self._keys = Keyspace(prefix=config.key_prefix)
        self._publish_timeout = config.publish_timeout
        self._routes: dict[str, Route] = {}
        self._group_specs: dict[str, tuple[str, GroupOptions]] = {}  # route id -> group
        self._hooks = Hooks(Counters())
        self._wiring: Wiring = THREADED
        self._forked = False
        self._start_process_state(rooms=[])
        _live_buses.add(self)
        if config.log_level is not None:
            level = config.log_level.upper()
            logging.getLogger("eventbus").setLevel("WARNING" if level == "WARN" else level)

    def _start_process_state(self, rooms: list[str]) -> None:
        """(Re)build everything that belongs to one process: id, locks, counters, threads.

        Runs in ``__init__`` and, in a forked child, after ``fork()``: the child keeps
        the parent's subscriptions, rooms and hooks, never its sockets, threads, locks
        or queued events, and reconnects on first use.
        """
        config = self._config
        self._client_id = f"{config.service_name}:{_HOST}:{os.getpid()}:{next(_instances)}"
        self._sender = Sender(
            keys=self._keys,
            source=config.service_name,
            publisher=self._client_id,
            max_size=config.max_event_size,
        )
        self._state = _State.NEW
        self._lock = threading.RLock()  # lifecycle, subscriptions and rooms; never the hot path
        self._transport: Transport | None = None
        self._dispatcher: Executor | None = None
        self._batcher: Batcher | None = None
        self._counters = Counters()
        self._hooks.counters = self._counters
        self._handler_latency = LatencyWindow()
        self._delivery_latency = LatencyWindow()
        self._sequences: dict[str, Callable[[], int]] = {}
        self._started_at = 0.0
        self._presence = Presence(
            keys=self._keys,
            client_id=self._client_id,
            ttl=config.presence_ttl,
            interval=config.heartbeat_interval,
            timeout=config.operation_timeout,
            describe=self._describe,
            counters=self._counters,
            report=self._hooks.report,
        )
        for room in rooms:
            self._presence.add(room)
        self._receiver = Receiver(
            counters=self._counters,
            hooks=self._hooks,
            on_reconnect=self._presence.wake,
            groups_channel=self._keys.groups_channel,
            on_groups_changed=self._presence.wake,
        )
        self._groups = GroupManager(
            keys=self._keys,
            client_id=self._client_id,
            hooks=self._hooks,
            counters=self._counters,
            timeout=config.operation_timeout,
        )
        self._presence.on_beat = self._groups.reload
        for route in self._routes.values():
            route.reset_after_fork()
            spec = self._group_specs.get(route.id)
            if spec is None:
                self._receiver.add(self._keys.event_pattern(route.pattern.source), route)
            else:
                self._groups.add(route, *spec)

    def _after_fork_in_child(self) -> None:
        """Forget the parent's connection in a forked child; reconnect on first use.

        A bus never connected gets an id (and locks) of its own too, and still
        connects when told to; a closed one stays closed.
        """
        if self._state in _ENDED:
            self._state = _State.CLOSED  # the parent's disconnect() does not run here
            return
        self._forked = self._state is _State.CONNECTED
        # Drop, never close: redis-py closes (without shutdown) the inherited sockets
        # when they are collected, and the parent's threads do not exist here.
        self._start_process_state(rooms=self._presence.rooms)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, service_name: str, **options: Any) -> Self:
        """A bus for the transport at ``url``; ``options`` are :class:`EventBusConfig` fields.

        Example::

            bus = EventBus.from_url("redis://localhost:6379/0", service_name="photo-api")
        """
        return cls(EventBusConfig.from_url(url, service_name=service_name, **options))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Self:
        """A bus configured from environment variables (see :meth:`EventBusConfig.from_env`)."""
        return cls(EventBusConfig.from_env(environ, **options))

    @property
    def config(self) -> EventBusConfig:
        """The configuration this bus was made with."""
        return self._config

    @property
    def client_id(self) -> str:
        """This bus's id, ``<service_name>:<host>:<pid>:<n>``."""
        return self._client_id

    @property
    def service_name(self) -> str:
        """The service this bus publishes as (``event.source``)."""
        return self._config.service_name

    # -- lifecycle ---------------------------------------------------------------------

    def connect(self) -> None:
        """Connect the transport and start the listener, handler pool and heartbeat.

        Subscriptions and rooms made before connecting become live now. Calling it on
        a connected bus does nothing.

        Raises:
            TransportConnectionError: the server cannot be reached (the bus stays
                unconnected and ``connect()`` may be called again).
            BusClosedError: the bus was disconnected before.
        """
        with self._lock:
            if self._state is _State.CONNECTED:
                return
            if self._state in _ENDED:
                raise BusClosedError("this bus was disconnected; create a new EventBus")
            config = self._config
            transport = self._wiring.new_transport(
                config,
                client_name=self._client_id,
                control_channel=self._keys.control_channel(self._client_id),
            )
            timeout = config.operation_timeout
            # The executor exists before the first message can arrive (a pool's threads
            # start lazily), so nothing received while subscribing is lost.
            meters = Meters(
                counters=self._counters,
                handler_latency=self._handler_latency,
                delivery_latency=self._delivery_latency,
            )
            dispatcher = self._wiring.new_executor(config, meters, self._hooks.report)
            self._receiver.dispatcher = dispatcher
            try:
                transport.start(self._receiver)
                try:
                    transport.subscribe(
                        [self._keys.broadcast_channel, self._keys.groups_channel], timeout
                    )
                    rooms = self._presence.rooms
                    if rooms:
                        transport.subscribe([self._keys.room_channel(r) for r in rooms], timeout)
                    keys = list(self._receiver.by_key)
                    if keys:
                        transport.psubscribe(keys, timeout)
                except BaseException:
                    transport.stop(timeout)
                    raise
            except BaseException:
                self._receiver.dispatcher = None
                dispatcher.shutdown(0)
                raise
            self._transport = transport
            self._dispatcher = dispatcher
            if config.performance.batch_size > 1:
                self._batcher = Batcher(
                    transport=transport,
                    batch_size=config.performance.batch_size,
                    interval=config.performance.batch_interval,
                    capacity=config.performance.max_buffer,
                    timeout=config.publish_timeout,
                    counters=self._counters,
                    report=self._hooks.report,
                )
            self._started_at = time.monotonic()
            self._state = _State.CONNECTED
            self._presence.start(transport)  # its first beat also loads the group registry
            try:
                self._groups.start_all(transport, dispatcher)
            except BaseException:
                self._abort_connect()
                raise
        log.info("bus %s connected to %s", self._client_id, config.transport_url)

    def _abort_connect(self) -> None:
        """Undo a connect that failed half-way (lock held); the bus is new again."""
        self._groups.stop_reading(0)
        if self._batcher is not None:
            self._batcher.close(0)
        self._presence.stop()
        if self._dispatcher is not None:
            self._dispatcher.shutdown(0)
        if self._transport is not None:
            self._transport.stop(self._config.operation_timeout)
        self._start_process_state(rooms=self._presence.rooms)

    def is_connected(self) -> bool:
        """True between :meth:`connect` and :meth:`disconnect`."""
        return self._state is _State.CONNECTED

    def disconnect(self, timeout: float | None = None) -> None:
        """Stop taking events, let queued handlers finish, flush batched publishes, stop
        every thread.

        While the handlers finish, they (and the rest of the process) may still
        publish; subscribing, joining a room or connecting raises
        :class:`~eventbus.BusClosedError` from the start. ``timeout`` (default
        ``config.shutdown_timeout``) bounds the handlers' drain and the flush each;
        what is still queued then is dropped and counted, a handler still running is
        left to finish on its own (its publishes then raise ``BusClosedError``). A
        disconnected bus cannot connect again. Calling it twice does nothing.
        """
        timeout = self._config.shutdown_timeout if timeout is None else timeout
        with self._lock:
            if self._state in _ENDED:
                return
            was_connected = self._state is _State.CONNECTED
            self._state = _State.CLOSING if was_connected else _State.CLOSED
            transport, dispatcher, batcher = self._transport, self._dispatcher, self._batcher
        if not was_connected or transport is None or dispatcher is None:
            return
        self._receiver.closing = True  # what pub/sub delivers from now on is not taken
        self._groups.stop_reading(timeout)
        # Handlers finish while the transport is still open: they may publish, and
        # groups acknowledge there.
        finished = dispatcher.shutdown(timeout)
        with self._lock:
            self._state = _State.CLOSED
        if batcher is not None:
            batcher.close(timeout)  # what was published until now, handlers' included
        self._groups.flush_acks()
        self._presence.stop()
        transport.stop(self._config.operation_timeout)
        if not finished:
            leftover = sum(dispatcher.deactivate(route) for route in list(self._routes.values()))
            self._counters.add("events_dropped", leftover)
            log.warning(
                "bus closed after %.1fs with handlers still running and %d queued event(s) "
                "unhandled",
                timeout,
                leftover,
            )
        log.info("bus %s disconnected", self._client_id)

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def _require_connected(self) -> Transport:
        transport = self._transport
        if self._state is _State.CLOSING and transport is not None:
            return transport  # disconnect() lets handlers finish: they may publish
        if self._state is not _State.CONNECTED or transport is None:
            if self._state in _ENDED:
                raise BusClosedError("this bus was disconnected; create a new EventBus")
            if not self._forked:
                raise BusStateError("the bus is not connected: call connect() or use `with bus:`")
            self.connect()  # in a forked child: a connection of its own, on first use
            assert self._transport is not None
            return self._transport
        return transport

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
        """Send an event to every subscription whose pattern matches ``event_type``.

        Args:
            event_type: dotted name, e.g. ``photo.uploaded``.
            data: any JSON-serialisable value.
            headers: string metadata (``traceparent``, a correlation id...).
            event_id: reuse an id (for a retried publish: subscribers drop the copy);
                a new ULID by default.
            timeout: the publish deadline in seconds (default
                ``config.publish_timeout``).

        Raises:
            ValidationError: bad type, data, headers or size; nothing was sent.
            PublishTimeoutError, TransportConnectionError: the server failed.
            PublishBufferFullError: batching is on and its buffer is full.
            BusStateError: the bus is not connected.
        """
        return self._send(prepare(self._sender, event_type, data, headers, event_id), timeout)

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
        """Send an event to the members of ``room`` (buses that joined it, and sockets).

        Takes the arguments and raises the errors of :meth:`publish`.
        """
        outgoing = prepare(self._sender, event_type, data, headers, event_id, room=room)
        return self._send(outgoing, timeout)

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
        """Send an event to one user: the same as :meth:`publish_to_room` on ``user:<id>``.

        Takes the arguments and raises the errors of :meth:`publish`.
        """
        outgoing = prepare(self._sender, event_type, data, headers, event_id, user=user_id)
        return self._send(outgoing, timeout)

    def broadcast(
        self,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """Send an event to matching subscriptions on every bus and to every socket.

        Takes the arguments and raises the errors of :meth:`publish`.
        """
        outgoing = prepare(self._sender, event_type, data, headers, event_id, broadcast=True)
        return self._send(outgoing, timeout)

    def _send(self, outgoing: Outgoing, timeout: float | None) -> PublishResult:
        """Number and send an event :func:`prepare` checked and encoded."""
        channel, event_type, event_id, body, room = outgoing
        transport = self._require_connected()
        counter = self._sequences.get(channel)
        if counter is None:
            if len(self._sequences) >= _MAX_SEQUENCE_CHANNELS:
                self._sequences.clear()  # subscribers see the numbers restart, not a gap
            counter = self._sequences.setdefault(channel, itertools.count(1).__next__)
        payload = seal(body, counter())
        # Plain publishes and broadcasts also go into every matching durable group;
        # room and user events are addressed to the room's members only.
        targets = self._groups.targets(event_type) if room is None else ()
        batcher = self._batcher
        if batcher is not None:
            batcher.put(channel, payload, targets)
            return PublishResult(
                event_id=event_id, receivers=None, event_type=event_type, channel=channel
            )
        deadline = self._publish_timeout if timeout is None else timeout
        try:
            if targets and (groups := transport.groups) is not None:
                receivers = groups.route(channel, payload, targets, deadline)
            else:
                receivers = transport.publish(channel, payload, deadline)
        except TransportError:
            self._counters.add("publish_errors")
            raise
        self._counters.add("events_published")
        return PublishResult(
            event_id=event_id, receivers=receivers, event_type=event_type, channel=channel
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every batched publish so far was sent.

        Returns True at once when batching is off; False if ``timeout`` seconds passed
        with publishes still waiting (they stay queued).
        """
        batcher = self._batcher
        return True if batcher is None else batcher.flush(timeout)

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
        """Run ``handler`` for every event whose type matches ``pattern``.

        Patterns use Redis glob rules: ``*`` matches any run of characters including
        dots (``photo.*`` gets ``photo.uploaded`` and ``photo.processing.completed``),
        ``?`` one character, ``[abc]`` a class. The subscription also receives
        matching events of rooms this bus joined, and broadcasts.

        Args:
            pattern: the glob pattern on event types.
            handler: called with each :class:`Event` on a handler thread.
            retry_on_error: retry a handler that raises, with exponential backoff.
            max_retries: retries after the first attempt (default
                ``config.performance.max_retries``); needs ``retry_on_error``.
            timeout: seconds an attempt may take; a longer one counts as failed and
                the subscription moves on (the thread cannot be stopped).
            filter: a Node-style condition tree or a callable ``Event -> bool``;
                events it rejects never reach a handler thread.
            concurrency: handler runs of this subscription at once; 1 keeps publish
                order.
            group: a durable group name: the events go to one consumer of the group
                (every process subscribing with the same name shares them), at least
                once, acknowledged after the handler succeeded (see the docs' page on
                groups). None (the default) is fan-out: every subscription gets every
                event, at most once.
            group_options: how the group is consumed (:class:`GroupOptions`).

        Raises:
            InvalidPatternError, InvalidFilterError, ValidationError: bad arguments.
            TransportError: the server did not confirm the subscription.
        """
        options = SubscribeOptions(
            pattern=pattern,
            handler=handler,
            retry_on_error=retry_on_error,
            max_retries=max_retries,
            timeout=timeout,
            filter=filter,
            concurrency=concurrency,
            group=group,
            group_options=group_options,
        )
        return self._subscribe(options)

    def _subscribe(self, options: SubscribeOptions) -> Subscription:
        """Make the subscription ``options`` describe (checked already)."""
        perf = self._config.performance
        route = Route(
            sub_id=f"sub-{next(_sub_ids)}",
            pattern=options.matcher,
            handler=options.handler,
            event_filter=options.event_filter,
            retry=RetryPolicy(
                max_retries=options.retries(perf.max_retries),
                initial_delay=perf.retry_delay,
                max_delay=perf.retry_max_delay,
                jitter=perf.retry_delay,
            ),
            timeout=options.timeout,
            concurrency=options.concurrency,
            queue_size=self._config.queue_size,
            overflow=self._config.overflow,
            block_timeout=self._config.block_timeout,
        )
        if options.group is not None:
            return self._subscribe_group(
                route, options.group, options.group_options or GroupOptions()
            )
        key = self._keys.event_pattern(options.pattern)
        with self._lock:
            if self._state in _ENDED:
                raise BusClosedError("this bus was disconnected; create a new EventBus")
            self._routes[route.id] = route
            if self._receiver.add(key, route) and self.is_connected() and self._transport:
                try:
                    self._transport.psubscribe([key], self._config.operation_timeout)
                except BaseException:
                    self._drop_route(route)
                    raise
        if self._forked and self._state is _State.NEW:
            self.connect()
        return Subscription(self, route)

    def _subscribe_group(self, route: Route, group: str, options: GroupOptions) -> Subscription:
        # The consumer keeps at most max_in_flight entries in the pool: the queue never
        # overflows, so no entry is dropped unacknowledged.
        route.queue_size = options.max_in_flight + 1
        with self._lock:
            if self._state in _ENDED:
                raise BusClosedError("this bus was disconnected; create a new EventBus")
            self._routes[route.id] = route
            self._group_specs[route.id] = (group, options)
            self._groups.add(route, group, options)
            transport, dispatcher = self._transport, self._dispatcher
            if self.is_connected() and transport is not None and dispatcher is not None:
                try:
                    self._groups.start_route(transport, dispatcher, route.id)
                except BaseException:
                    self._groups.remove(route.id, 0)
                    del self._routes[route.id], self._group_specs[route.id]
                    raise
        if self._forked and self._state is _State.NEW:
            self.connect()
        return Subscription(self, route)

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
        """Decorator form of :meth:`subscribe`, with the same options.

        Example::

            @bus.on("photo.processing.*", retry_on_error=True, max_retries=3)
            def on_processing(event: Event) -> None: ...
        """

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
        """Stop a subscription; its queued events are dropped. False if unknown."""
        with self._lock:
            route = self._routes.get(subscription_id)
            if route is None:
                return False
            if self._group_specs.pop(subscription_id, None) is not None:
                self._groups.remove(subscription_id, self._config.operation_timeout)
                del self._routes[subscription_id]
                if self._dispatcher is not None:
                    self._dispatcher.deactivate(route)  # unacked entries go to others
                route.active = False
                return True
            key = self._drop_route(route)
            if key is not None and self._transport is not None and self.is_connected():
                self._transport.punsubscribe([key], self._config.operation_timeout)
        return True

    def _drop_route(self, route: Route) -> str | None:
        """Remove ``route`` (lock held); the pattern key if no route uses it any more."""
        self._routes.pop(route.id, None)
        key = self._keys.event_pattern(route.pattern.source)
        unused = self._receiver.remove(key, route)
        dropped = self._dispatcher.deactivate(route) if self._dispatcher else 0
        route.active = False
        if dropped:
            self._counters.add("events_dropped", dropped)
        return key if unused else None

    def subscriptions(self) -> list[Subscription]:
        """The active subscriptions, oldest first."""
        return [Subscription(self, route) for route in list(self._routes.values())]

    # -- hooks -------------------------------------------------------------------------

    def on_error(self, hook: ErrorHook) -> ErrorHook:
        """Call ``hook(error, event)`` for every failure the bus cannot raise to a caller.

        ``error`` is a :class:`HandlerError` (a handler's last attempt failed; the
        handler's exception is ``error.__cause__``), a :class:`FilterError`, a
        :class:`DecodeError`, or a :class:`TransportError` or other
        :class:`EventBusError` from a background thread; ``event`` is the event
        concerned or None. Without hooks, failures are logged. Usable as a decorator.
        """
        self._hooks.error_hooks.append(hook)
        return hook

    def on_gap(self, hook: GapHook) -> GapHook:
        """Call ``hook(gap)`` when events may have been lost (see :class:`Gap`).

        Without hooks, gaps are logged as warnings. Usable as a decorator.
        """
        self._hooks.gap_hooks.append(hook)
        return hook

    # -- rooms -------------------------------------------------------------------------

    def join_room(self, room: str) -> None:
        """Receive events published to ``room`` and appear in its member list.

        Membership is refreshed by the heartbeat and expires ``presence_ttl`` seconds
        after the process dies. Joining before :meth:`connect` takes effect on connect.

        Raises:
            InvalidNameError: ``room`` breaks the naming rules.
            TransportError: the server failed.
            BusClosedError: the bus was disconnected.
        """
        validate_room(room)
        with self._lock:
            if self._state in _ENDED:
                raise BusClosedError("this bus was disconnected; create a new EventBus")
            if not self._presence.add(room):
                return
            if self._forked and self._state is _State.NEW:
                self.connect()  # subscribes the room channel and enters the room
                return
            transport = self._transport if self.is_connected() else None
            if transport is not None:
                try:
                    channel = self._keys.room_channel(room)
                    transport.subscribe([channel], self._config.operation_timeout)
                    self._presence.enter(transport, room)
                except BaseException:
                    self._presence.remove(room)
                    raise

    def leave_room(self, room: str) -> None:
        """Stop receiving ``room``'s events and leave its member list."""
        validate_room(room)
        with self._lock:
            if not self._presence.remove(room):
                return
            transport = self._transport if self.is_connected() else None
            if transport is not None:
                channel = self._keys.room_channel(room)
                transport.unsubscribe([channel], self._config.operation_timeout)
                self._presence.exit(transport, room)

    def get_room_members(self, room: str) -> list[str]:
        """Members of ``room`` across every process: bus client ids and socket user ids.

        Raises:
            InvalidNameError: ``room`` breaks the naming rules.
            TransportError: the server failed.
        """
        validate_room(room)
        return self._presence.members(self._require_connected(), room)

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this bus has joined."""
        return frozenset(self._presence.rooms)

    # -- monitoring --------------------------------------------------------------------

    def get_clients(self) -> list[ClientInfo]:
        """Every live bus on this server (this one included), from their heartbeats.

        Records are refreshed every ``heartbeat_interval`` seconds, so their counters
        are that old at most. A record that cannot be read is skipped and logged.

        Raises:
            TransportError: the server failed.
        """
        return self._presence.clients(self._require_connected())

    def _describe(self) -> dict[str, object]:
        """This bus's client record, for the heartbeat."""
        stats = self.get_stats().as_dict()
        del stats["subscriptions"]
        return {
            "client_id": self._client_id,
            "service": self._config.service_name,
            "host": _HOST,
            "transport": self._config.transport_url,
            "subscriptions": sorted({r.pattern.source for r in self._receiver.routes}),
            "stats": stats,
        }

    # -- durable groups: administration -------------------------------------------------

    def get_groups(self) -> dict[str, GroupInfo]:
        """Every durable group registered on the server, with its stream's state.

        Raises:
            TransportError: the server failed.
        """
        transport = self._require_connected()
        groups = self._groups.registered(transport)
        return {name: self._groups.info(transport, name) for name in sorted(groups)}

    def get_group_patterns(self) -> dict[str, str]:
        """Every durable group registered on the server and its pattern."""
        return self._groups.registered(self._require_connected())

    def dead_letters(self, group: str, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` entries of ``group``'s dead-letter stream.

        Raises:
            InvalidNameError: ``group`` breaks the naming rules.
            TransportError: the server failed.
        """
        validate_group(group)
        return self._groups.dead_letters(self._require_connected(), group, count)

    def replay_dead_letters(self, group: str, ids: Sequence[str] | None = None) -> int:
        """Put dead letters (all, or those ``ids``) back into ``group``'s stream, to be
        delivered again; return how many.
        """
        validate_group(group)
        return self._groups.replay(self._require_connected(), group, ids)

    def purge_dead_letters(self, group: str) -> int:
        """Delete ``group``'s dead letters; return how many there were."""
        validate_group(group)
        return self._groups.purge(self._require_connected(), group)

    def get_stats(self) -> EventBusStats:
        """A frozen snapshot of this bus's counters."""
        values = self._counters.snapshot()
        handler_p50, handler_p99 = self._handler_latency.percentiles_ms(0.5, 0.99)
        delivery_p50, delivery_p99 = self._delivery_latency.percentiles_ms(0.5, 0.99)
        dispatcher = self._dispatcher
        routes = list(self._routes.values())
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
            decode_errors=values.get("decode_errors", 0),
            publish_errors=values.get("publish_errors", 0),
            handler_timeouts=values.get("handler_timeouts", 0),
            abandoned_handlers=dispatcher.abandoned if dispatcher else 0,
            active_subscriptions=len(routes),
            rooms=len(self._presence.rooms),
            reconnects=values.get("reconnects", 0),
            gaps_detected=values.get("gaps_detected", 0),
            hook_errors=values.get("hook_errors", 0),
            heartbeat_errors=values.get("heartbeat_errors", 0),
            events_redelivered=values.get("events_redelivered", 0),
            dead_lettered=values.get("dead_lettered", 0),
            group_entries_lost=values.get("group_entries_lost", 0),
            groups_recreated=values.get("groups_recreated", 0),
            group_errors=values.get("group_errors", 0),
            handler_p50_ms=handler_p50,
            handler_p99_ms=handler_p99,
            delivery_p50_ms=delivery_p50,
            delivery_p99_ms=delivery_p99,
            subscriptions=tuple(route.stats() for route in routes),
            groups=self._groups.stats(),
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
        )

    def health_check(self) -> HealthCheckResult:
        """Ping the server and look at the threads; never raises.

        ``status`` is ``unhealthy`` if the bus is not connected, the server does not
        answer or the listener thread is dead; ``degraded`` if the server is slow
        (over 100 ms), handler threads are stuck past their timeout, or a full queue
        dropped events in the last minute; else ``healthy``.
        """
        dispatcher = self._dispatcher
        checks = check_health(
            transport=self._transport if self.is_connected() else None,
            timeout=min(HEALTH_PING_TIMEOUT, self._config.operation_timeout),
            last_message_at=self._receiver.last_message_at,
            abandoned=dispatcher.abandoned if dispatcher else 0,
            dropped=dispatcher.overflow_drops if dispatcher else 0,
            groups=len(self._groups.stats()),
            dead_groups=self._groups.dead_consumers(),
            last_drop_at=dispatcher.last_drop_at if dispatcher else None,
        )
        return HealthCheckResult(
            status=worst(checks),
            uptime=time.monotonic() - self._started_at if self._started_at else 0.0,
            checks=checks,
            service_name=self._config.service_name,
            client_id=self._client_id,
            transport=self._config.transport_url,
        )


def wire(bus: EventBus, wiring: Wiring) -> None:
    """Make ``bus`` build its transport and executor with ``wiring`` when it connects.

    The one seam between :class:`EventBus` and what it runs on, for the testing kit:
    ``eventbus.testing.RecordingBus`` is an ``EventBus`` wired to a recording transport
    and an :class:`~eventbus._runtime.inline.InlineExecutor` (docs/testing.md), so
    that everything in between is the real bus. It is not public API, and
    ``EventBus``'s own signature does not change: a bus not wired here uses
    :data:`THREADED`. Call it before the bus first connects (its ``__init__`` is the
    place); a forked child reconnects with the same wiring.

    Raises:
        BusStateError: the bus was connected (or disconnected) already.
    """
    with bus._lock:
        if bus._state is not _State.NEW or bus._transport is not None:
            raise BusStateError("wire() a bus before it connects")
        bus._wiring = wiring
