"""Dispatcher behaviours through the public API on memory:// (fast, no server).

Overflow policies, the concurrency limit, failing hooks and filters, unsubscribing with
events queued, and a disconnect that a stuck handler cannot hold up.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventbus import Event, EventBus, EventBusError, HandlerError, PerformanceConfig

from _helpers import Recorder, wait_for

BusFactory = Callable[..., EventBus]
_brokers = itertools.count(1)


@pytest.fixture
def make_bus() -> Iterator[BusFactory]:
    """Connected buses on a fresh memory:// broker; all disconnected at teardown."""
    url = f"memory://dispatch-{next(_brokers)}-{time.monotonic_ns()}"
    buses: list[EventBus] = []

    def make(**options: Any) -> EventBus:
        options.setdefault("performance", PerformanceConfig(retry_delay=0.01, retry_max_delay=0.05))
        bus = EventBus.from_url(url, service_name="dispatch-test", **options)
        buses.append(bus)
        bus.connect()
        return bus

    yield make
    for bus in buses:
        bus.disconnect(timeout=2.0)


class Gate:
    """A handler that records events and holds each one until the gate opens."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started = threading.Event()
        self.returned = threading.Event()
        self.got = Recorder()

    def __call__(self, event: Event) -> None:
        self.started.set()
        self.opened.wait(20)
        self.got(event)
        self.returned.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    """A gated handler; the gate always opens at teardown so no handler thread lingers."""
    handler = Gate()
    try:
        yield handler
    finally:
        handler.opened.set()


def _publish_first_and_hold(bus: EventBus, gate: Gate, event_type: str) -> None:
    """Publish one event and wait until the handler is running (and stuck) on it."""
    bus.publish(event_type, 0)
    assert gate.started.wait(5), "the handler never started"


# -- overflow policies ------------------------------------------------------------------


def test_drop_newest_keeps_the_queue_and_drops_new_events(make_bus: BusFactory, gate: Gate) -> None:
    """With overflow=drop_newest a full queue refuses new events and counts each one."""
    bus = make_bus(queue_size=3, overflow="drop_newest")
    sub = bus.subscribe("q.*", gate)
    _publish_first_and_hold(bus, gate, "q.n")
    for n in range(1, 10):
        bus.publish("q.n", n)
    wait_for(lambda: sub.stats().received == 10, what="every event offered")
    assert sub.stats().queued == 3
    gate.opened.set()
    gate.got.wait(4)
    bus.publish("q.n", 99)  # room again: accepted
    events = gate.got.wait(5)
    assert [e.data for e in events] == [0, 1, 2, 3, 99]
    assert sub.stats().dropped == 6
    assert bus.get_stats().events_dropped == 6


def test_block_makes_the_listener_wait_then_drops_the_new_event(
    make_bus: BusFactory, gate: Gate
) -> None:
    """overflow=block holds the listener up to block_timeout, then drops and counts."""
    block_timeout = 0.3
    bus = make_bus(queue_size=2, overflow="block", block_timeout=block_timeout)
    sub = bus.subscribe("q.*", gate)
    other = Recorder()
    arrived: list[float] = []
    bus.subscribe("other.*", lambda event: (arrived.append(time.monotonic()), other(event)))
    _publish_first_and_hold(bus, gate, "q.n")
    bus.publish("q.n", 1)
    bus.publish("q.n", 2)  # the queue is full now
    before = time.monotonic()
    bus.publish("q.n", 3)  # the listener blocks on this one...
    bus.publish("other.x")  # ...so this one waits behind it
    other.wait(1)
    # A lower bound only: the listener could not take other.x before giving up on q.n 3.
    assert arrived[0] - before >= block_timeout * 0.9
    assert sub.stats().dropped == 1
    assert bus.get_stats().events_dropped == 1
    gate.opened.set()
    assert [e.data for e in gate.got.wait(3)] == [0, 1, 2]


def test_block_with_space_freed_in_time_drops_nothing(make_bus: BusFactory, gate: Gate) -> None:
    """overflow=block: when the handler frees a slot before block_timeout, nothing is lost."""
    bus = make_bus(queue_size=1, overflow="block", block_timeout=10.0)
    sub = bus.subscribe("q.*", gate)
    _publish_first_and_hold(bus, gate, "q.n")
    bus.publish("q.n", 1)  # fills the queue
    bus.publish("q.n", 2)  # the listener waits for room
    wait_for(lambda: sub.stats().received == 3, what="the listener blocked on the third")
    gate.opened.set()
    assert [e.data for e in gate.got.wait(3)] == [0, 1, 2]
    assert sub.stats().dropped == 0
    assert bus.get_stats().events_dropped == 0


def test_unsubscribe_while_the_listener_blocks_counts_the_blocked_event(
    make_bus: BusFactory, gate: Gate
) -> None:
    """Unsubscribing wakes a listener blocked on the full queue; its event counts as dropped."""
    bus = make_bus(queue_size=1, overflow="block", block_timeout=10.0)
    sub = bus.subscribe("q.*", gate)
    marker = Recorder()
    bus.subscribe("marker", marker)
    _publish_first_and_hold(bus, gate, "q.n")
    bus.publish("q.n", 1)  # queued
    bus.publish("q.n", 2)  # blocks the listener
    wait_for(lambda: sub.stats().received == 3, what="the listener blocked on the third")
    assert sub.unsubscribe()
    bus.publish("marker")
    marker.wait(1)  # the listener is free again (well before block_timeout)
    assert bus.get_stats().events_dropped == 2  # one queued, one the listener held


# -- concurrency ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_concurrency_never_exceeds_its_limit(make_bus: BusFactory, limit: int) -> None:
    """concurrency=N runs N handlers at once, never more, over 50 events."""
    bus = make_bus(handler_threads=8)
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    calls = itertools.count()
    together = threading.Barrier(limit, timeout=5)  # the first N must overlap
    done = Recorder()

    def handler(event: Event) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            if next(calls) < limit:
                together.wait()
            time.sleep(0.002)  # simulated work, so that excess overlap would show
        finally:
            with lock:
                in_flight -= 1
        done(event)

    bus.subscribe("c.*", handler, concurrency=limit)
    for n in range(50):
        bus.publish("c.n", n)
    events = done.wait(50, timeout=15)
    assert sorted(e.data for e in events) == list(range(50))
    assert peak == limit
    assert bus.get_stats().events_failed == 0


# -- failing hooks and filters ----------------------------------------------------------


def test_a_failing_error_hook_is_counted_and_delivery_goes_on(
    make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in an on_error hook counts in hook_errors; other hooks and events go on."""
    caplog.set_level(logging.CRITICAL, logger="eventbus")  # the hook failure is logged
    bus = make_bus()
    seen: list[EventBusError] = []

    @bus.on_error
    def broken_hook(error: EventBusError, event: Event | None) -> None:
        raise RuntimeError("the hook itself fails")

    bus.on_error(lambda error, event: seen.append(error))
    got = Recorder()

    def handler(event: Event) -> None:
        if event.data == "bad":
            raise ValueError("handler failure")
        got(event)

    bus.subscribe("h.*", handler)
    bus.publish("h.n", "bad")
    bus.publish("h.n", "good-1")
    bus.publish("h.n", "good-2")
    assert [e.data for e in got.wait(2)] == ["good-1", "good-2"]
    wait_for(lambda: seen, what="the second hook")
    assert isinstance(seen[0], HandlerError)
    stats = bus.get_stats()
    assert stats.hook_errors == 1
    assert stats.events_failed == 1
    assert stats.events_handled == 2


def test_a_raising_filter_is_reported_and_the_event_skipped(make_bus: BusFactory) -> None:
    """A filter that raises reports the error with its cause; that event is skipped only."""
    bus = make_bus()
    errors: list[tuple[EventBusError, Event | None]] = []
    bus.on_error(lambda error, event: errors.append((error, event)))

    def picky(event: Event) -> bool:
        if event.data == "boom":
            raise KeyError("missing field")
        return True

    got = Recorder()
    bus.subscribe("f.*", got, filter=picky)
    bus.publish("f.n", "before")
    bus.publish("f.n", "boom")
    bus.publish("f.n", "after")
    assert [e.data for e in got.wait(2)] == ["before", "after"]
    wait_for(lambda: errors, what="the filter error report")
    ((error, event),) = errors
    assert isinstance(error, EventBusError)
    assert isinstance(error.__cause__, KeyError)
    assert event is not None
    assert event.data == "boom"
    stats = bus.get_stats()
    assert stats.filter_errors == 1
    assert stats.events_received == 2
    assert stats.events_failed == 0


# -- unsubscribe and disconnect ---------------------------------------------------------


def test_unsubscribe_drops_queued_events_and_counts_them(make_bus: BusFactory, gate: Gate) -> None:
    """Unsubscribing with events queued drops them (counted); the handler gets no more."""
    bus = make_bus()
    sub = bus.subscribe("u.*", gate)
    marker = Recorder()
    bus.subscribe("marker", marker)
    _publish_first_and_hold(bus, gate, "u.n")
    for n in range(1, 6):
        bus.publish("u.n", n)
    wait_for(lambda: sub.stats().received == 6, what="every event queued")
    assert sub.unsubscribe() is True
    assert sub.active is False
    assert bus.unsubscribe(sub.id) is False
    assert bus.get_stats().events_dropped == 5
    gate.opened.set()
    assert gate.returned.wait(5)
    bus.publish("u.n", 6)  # after unsubscribe: never delivered
    bus.publish("marker")
    marker.wait(1)
    assert [e.data for e in gate.got.events] == [0]
    assert bus.get_stats().active_subscriptions == 1


def test_disconnect_returns_within_its_timeout_despite_a_stuck_handler(
    make_bus: BusFactory, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    """disconnect(timeout) gives up on a stuck handler in about timeout and reports leftovers."""
    caplog.set_level(logging.WARNING, logger="eventbus")
    bus = make_bus()
    sub = bus.subscribe("s.*", gate)
    _publish_first_and_hold(bus, gate, "s.n")
    for n in range(1, 4):
        bus.publish("s.n", n)
    wait_for(lambda: sub.stats().received == 4, what="every event queued")
    timeout = 0.5
    started = time.monotonic()
    bus.disconnect(timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + 3.0  # a behaviour bound, not a benchmark
    assert not bus.is_connected()
    assert bus.get_stats().events_dropped == 3
    leftovers = [r for r in caplog.records if "still running" in r.getMessage()]
    assert len(leftovers) == 1
    assert "3 queued event(s)" in leftovers[0].getMessage()
    assert gate.got.events == []  # the stuck handler is still stuck, not killed
    gate.opened.set()
    assert gate.returned.wait(5)
