"""What a :class:`~eventbus.testing.RecordingBus` runs on, and what it records.

:class:`Recording` is the bus's :class:`~eventbus._runtime.wiring.Wiring`: when the
bus connects, it gets a :class:`RecordingTransport` (the memory transport, on a broker
of its own, delivering in the publisher's thread) and an
:class:`~eventbus._runtime.inline.InlineExecutor` (handlers run on ``drain()``).
Everything in between is :class:`~eventbus.EventBus`'s own code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from eventbus import Event, EventBusConfig, EventBusError, Subscription
from eventbus._core.envelope import decode
from eventbus._core.keyspace import Keyspace
from eventbus._core.stats import Counters
from eventbus._runtime.dispatch import ErrorReporter
from eventbus._runtime.inline import InlineExecutor
from eventbus._runtime.wiring import Executor, Meters
from eventbus._transports.base import StreamTarget, Transport
from eventbus._transports.memory.transport import MemoryBroker, MemoryGroupStore, MemoryTransport

__all__ = ["Recording", "RecordingGroupStore", "RecordingTransport"]


class RecordingTransport(MemoryTransport):
    """The memory transport of one bus, recording each event published on it.

    Its broker is its own (nothing reaches another bus), and it has no listener
    thread: a publish is recorded, handed to the bus's subscriptions (the bus's
    receiver matches, filters and queues it on the executor) and appended to the
    group streams it is routed to, whose consumers then read it, all before the
    publish returns. It returns how many deliveries it queued on this bus.
    """

    name = "recording"

    def __init__(
        self,
        *,
        groups_channel: str,
        record: Callable[[Event], None],
        published: Callable[[], None],
        subscriptions: Callable[[], list[Subscription]],
    ) -> None:
        super().__init__(MemoryBroker("recording"), threaded=False)
        #: The executor the bus's deliveries go to (set when the bus connects).
        self.executor: InlineExecutor | None = None
        self._groups_channel = groups_channel
        self._record = record
        self._published = published
        self._subscriptions = subscriptions
        # One publish at a time, so that deliveries queue in publish order.
        self._lock = threading.RLock()
        self.groups = RecordingGroupStore(self)

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """Record and deliver one message (see :meth:`route`)."""
        return self.route(channel, payload, (), timeout)

    def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        """:meth:`publish` for several messages, in order."""
        return [self.route(channel, payload, (), timeout) for channel, payload in messages]

    def route(
        self, channel: str, payload: bytes, targets: Sequence[StreamTarget], timeout: float
    ) -> int:
        """Record the event, deliver it and append it to ``targets``, now; return how
        many deliveries it queued on this bus (its groups' included)."""
        event = None if channel == self._groups_channel else decode(payload, channel).event
        with self._lock:
            executor = self.executor
            before = executor.offered if executor is not None else 0
            if event is not None:
                self._record(event)
            self.broker.publish(channel, payload, targets)
            self.deliver_pending()
            if executor is None:
                return 0
            if executor.offered - before > 1:
                # The receiver queues an event pattern by pattern; a recording bus runs
                # it subscription by subscription, oldest first (docs/testing.md).
                rank = {sub.id: n for n, sub in enumerate(self._subscriptions())}
                executor.sort_newest(executor.offered - before, lambda r: rank.get(r.id, 0))
            executor.poll()  # the groups' consumers read it
            queued = executor.offered - before
        if event is not None:
            self._published()  # outside the lock: an eager bus drains here
        return queued


class RecordingGroupStore(MemoryGroupStore):
    """The memory group store of a :class:`RecordingTransport`: a publish routed to
    group streams is recorded and delivered like any other (:meth:`RecordingTransport.route`).
    """

    def __init__(self, transport: RecordingTransport) -> None:
        super().__init__(transport.broker, transport.check_started)
        self._transport = transport

    def route(
        self, channel: str, payload: bytes, targets: Sequence[StreamTarget], timeout: float
    ) -> int:
        """Record, deliver and append to ``targets`` (see :meth:`RecordingTransport.route`)."""
        return self._transport.route(channel, payload, targets, timeout)

    def route_many(
        self,
        messages: Sequence[tuple[str, bytes, Sequence[StreamTarget]]],
        timeout: float,
    ) -> list[int]:
        """:meth:`route` for several messages, in order."""
        return [self.route(channel, data, targets, timeout) for channel, data, targets in messages]


class Recording:
    """What a recording bus recorded, and its :class:`~eventbus._runtime.wiring.Wiring`.

    Args:
        published: called after each event published, outside any lock (eager mode).
        subscriptions: the bus's subscriptions, oldest first.
    """

    def __init__(
        self, published: Callable[[], None], subscriptions: Callable[[], list[Subscription]]
    ) -> None:
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.errors: list[EventBusError] = []
        #: Failures not raised by a drain() yet.
        self.unraised: list[EventBusError] = []
        self.executor: InlineExecutor | None = None
        #: Held while handlers run; ``draining`` is the thread that runs them.
        self.drain_lock = threading.Lock()
        self.draining: int | None = None
        self._published = published
        self._subscriptions = subscriptions
        self._transport: RecordingTransport | None = None
        self._counters: Counters | None = None

    def new_transport(
        self, config: EventBusConfig, *, client_name: str, control_channel: str
    ) -> Transport:
        """A :class:`RecordingTransport`, whatever URL ``config`` names."""
        self._transport = RecordingTransport(
            groups_channel=Keyspace(prefix=config.key_prefix).groups_channel,
            record=self.record,
            published=self._after_publish,
            subscriptions=self._subscriptions,
        )
        return self._transport

    def new_executor(
        self, config: EventBusConfig, meters: Meters, report: ErrorReporter
    ) -> Executor:
        """An :class:`InlineExecutor`; latencies are not measured."""
        self._counters = meters.counters
        self.executor = InlineExecutor(counters=meters.counters, report=report)
        if self._transport is not None:
            self._transport.executor = self.executor
        return self.executor

    def _after_publish(self) -> None:
        try:
            self._published()
        except BaseException:
            # An eager drain raised from inside publish(): the bus counts only a publish
            # that returns, but this one was made (and recorded).
            if self._counters is not None:
                self._counters.add("events_published")
            raise

    def record(self, event: Event) -> None:
        """Remember a published event."""
        with self.lock:
            self.events.append(event)

    def record_error(self, error: EventBusError, event: Event | None) -> None:
        """Remember a failure (the bus's first error hook)."""
        with self.lock:
            self.errors.append(error)
            self.unraised.append(error)

    def take_unraised(self) -> list[EventBusError]:
        """The failures not raised yet, oldest first; they count as raised now."""
        with self.lock:
            taken, self.unraised = self.unraised, []
            return taken

    def clear(self) -> None:
        """Forget the events, the failures and the pending deliveries."""
        with self.lock:
            self.events.clear()
            self.errors.clear()
            self.unraised.clear()
        if self.executor is not None:
            self.executor.discard()
