"""The public API's contract, run against every transport: memory:// and real Redis."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from eventbus import (
    BusClosedError,
    BusStateError,
    Event,
    EventBus,
    EventBusError,
    EventTooLargeError,
    Gap,
    HandlerError,
    HandlerTimeoutError,
    InvalidFilterError,
    InvalidNameError,
    InvalidPatternError,
    PerformanceConfig,
    SerializationError,
)
from eventbus._core.envelope import encode, new_event_id, seal

from _helpers import Recorder, wait_for

BusFactory = Callable[..., EventBus]
_names = itertools.count(1)


@pytest.fixture
def make_bus(transport_url: str) -> Iterator[BusFactory]:
    """Build connected buses on the test's broker; all are disconnected at teardown."""
    buses: list[EventBus] = []

    def make(service_name: str | None = None, *, connect: bool = True, **options: Any) -> EventBus:
        options.setdefault("performance", PerformanceConfig(retry_delay=0.01, retry_max_delay=0.05))
        bus = EventBus.from_url(
            transport_url, service_name=service_name or f"svc{next(_names)}", **options
        )
        buses.append(bus)
        if connect:
            bus.connect()
        return bus

    yield make
    for bus in buses:
        bus.disconnect(timeout=2.0)


@pytest.fixture
def bus(make_bus: BusFactory) -> EventBus:
    """One connected bus."""
    return make_bus()


def test_publish_reaches_matching_pattern_subscribers(bus: EventBus) -> None:
    """photo.* gets photo.uploaded and photo.processing.completed; *.processing.* only the latter."""
    photos, processing, exact = Recorder(), Recorder(), Recorder()
    bus.subscribe("photo.*", photos)
    bus.subscribe("*.processing.*", processing)
    bus.subscribe("photo.uploaded", exact)
    bus.publish("photo.uploaded", {"photoId": "123"})
    bus.publish("photo.processing.completed", {"photoId": "123"})
    bus.publish("user.created", {"userId": "u1"})
    photos.wait(2)
    processing.wait(1)
    exact.wait(1)
    bus.publish("photo.marker")
    photos.wait(3)
    assert photos.types == ["photo.uploaded", "photo.processing.completed", "photo.marker"]
    assert processing.types == ["photo.processing.completed"]
    assert exact.types == ["photo.uploaded"]


def test_event_carries_envelope_fields(bus: EventBus) -> None:
    """A handler gets id, type, data, source, aware UTC time, headers, room None."""
    got = Recorder()
    bus.subscribe("photo.uploaded", got)
    result = bus.publish(
        "photo.uploaded", {"photoId": "123", "size": 5}, headers={"traceparent": "00-ab-cd-01"}
    )
    (event,) = got.wait(1)
    assert event.id == result.event_id
    assert event.type == "photo.uploaded"
    assert event.data == {"photoId": "123", "size": 5}
    assert event.source == bus.service_name
    assert event.time.utcoffset() is not None
    assert abs(event.time.timestamp() - time.time()) < 60
    assert event.headers == {"traceparent": "00-ab-cd-01"}
    assert event.room is None
    assert event.delivery_attempt == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.type = "other"  # type: ignore[misc]


def test_publish_result_counts_receivers(make_bus: BusFactory) -> None:
    """receivers counts the subscribed buses; ids are unique and sortable by time."""
    a, b = make_bus(), make_bus()
    a.subscribe("order.*", Recorder())
    b.subscribe("order.*", Recorder())
    first = a.publish("order.placed", {})
    second = a.publish("nobody.listens", {})
    assert first.receivers == 2
    assert second.receivers == 0
    assert first.event_type == "order.placed"
    assert first.event_id < second.event_id


def test_events_cross_buses_with_their_source(make_bus: BusFactory) -> None:
    """An event published on one bus reaches another bus's handler with the publisher's name."""
    api, worker = make_bus("photo-api"), make_bus("photo-worker")
    got = Recorder()
    worker.subscribe("photo.uploaded", got)
    api.publish("photo.uploaded", {"photoId": "1"})
    (event,) = got.wait(1)
    assert event.source == "photo-api"


def test_rooms_reach_only_joined_buses(make_bus: BusFactory) -> None:
    """publish_to_room reaches buses in the room, with event.room set; others get nothing."""
    inside, outside, publisher = make_bus(), make_bus(), make_bus()
    got_in, got_out = Recorder(), Recorder()
    inside.subscribe("processing.*", got_in)
    outside.subscribe("processing.*", got_out)
    inside.join_room("photo:123")
    assert inside.rooms == frozenset({"photo:123"})
    publisher.publish_to_room("photo:123", "processing.update", {"progress": 50})
    (event,) = got_in.wait(1)
    assert event.room == "photo:123"
    assert event.data == {"progress": 50}
    outside.publish("processing.marker")
    got_out.wait(1)
    assert got_out.types == ["processing.marker"]


def test_publish_to_user_is_the_user_room(make_bus: BusFactory) -> None:
    """publish_to_user(U) reaches a bus in room user:U, with room and user set."""
    member, publisher = make_bus(), make_bus()
    got = Recorder()
    member.subscribe("notification.*", got)
    member.join_room("user:user-456")
    publisher.publish_to_user("user-456", "notification.new", {"title": "Photo Ready"})
    (event,) = got.wait(1)
    assert (event.room, event.user) == ("user:user-456", "user-456")


def test_leave_room_stops_room_events(make_bus: BusFactory) -> None:
    """After leave_room, the room's events no longer arrive."""
    member, publisher = make_bus(), make_bus()
    got = Recorder()
    member.subscribe("*", got)
    member.join_room("team/eng")
    publisher.publish_to_room("team/eng", "a.first")
    got.wait(1)
    member.leave_room("team/eng")
    publisher.publish_to_room("team/eng", "a.second")
    publisher.publish("a.marker")
    got.wait(2)
    assert got.types == ["a.first", "a.marker"]


def test_broadcast_reaches_every_bus(make_bus: BusFactory) -> None:
    """broadcast reaches matching subscriptions on every bus, flagged as broadcast."""
    buses = [make_bus() for _ in range(3)]
    recorders = [Recorder() for _ in buses]
    for bus, got in zip(buses, recorders, strict=True):
        bus.subscribe("system.*", got)
    buses[0].broadcast("system.maintenance", {"duration": "30 minutes"})
    for got in recorders:
        (event,) = got.wait(1)
        assert event.broadcast
        assert event.room is None


def test_room_members_cluster_wide(make_bus: BusFactory) -> None:
    """get_room_members lists each joined bus once; leaving removes it."""
    a, b = make_bus(), make_bus()
    a.join_room("photo:9")
    b.join_room("photo:9")
    a.join_room("photo:9")
    assert a.get_room_members("photo:9") == sorted([a.client_id, b.client_id])
    b.leave_room("photo:9")
    assert a.get_room_members("photo:9") == [a.client_id]
    assert a.get_room_members("photo:none") == []


def test_unsubscribe_stops_delivery(bus: EventBus) -> None:
    """unsubscribe returns True once, False after, and the handler gets nothing more."""
    got, marker = Recorder(), Recorder()
    sub = bus.subscribe("job.*", got)
    bus.subscribe("marker", marker)
    bus.publish("job.one")
    got.wait(1)
    assert bus.unsubscribe(sub.id) is True
    assert bus.unsubscribe(sub.id) is False
    assert not sub.active
    bus.publish("job.two")
    bus.publish("marker")
    marker.wait(1)
    assert got.types == ["job.one"]
    assert bus.get_stats().active_subscriptions == 1


def test_subscription_context_manager_unsubscribes(bus: EventBus) -> None:
    """A subscription used as a context manager is gone after the block."""
    with bus.subscribe("tmp.*", Recorder()) as sub:
        assert sub.active
    assert not sub.active
    assert bus.subscriptions() == []


def test_on_decorator_subscribes_and_returns_the_function(bus: EventBus) -> None:
    """@bus.on registers the handler and leaves the function usable."""
    seen: list[str] = []
    done = threading.Event()

    @bus.on("photo.processing.*")
    def on_processing(event: Event) -> None:
        seen.append(event.type)
        done.set()

    bus.publish("photo.processing.started")
    assert done.wait(5)
    assert seen == ["photo.processing.started"]
    assert callable(on_processing)


def test_subscribe_before_connect_becomes_live_on_connect(make_bus: BusFactory) -> None:
    """Decorators at import time: handlers registered before connect() receive after it."""
    bus = make_bus(connect=False)
    got = Recorder()
    bus.subscribe("early.*", got)
    bus.join_room("early-room")
    bus.connect()
    bus.publish("early.bird")
    bus.publish_to_room("early-room", "early.room")
    got.wait(2)
    assert sorted(got.types) == ["early.bird", "early.room"]


def test_filter_in_node_shape(bus: EventBus) -> None:
    """A Node-shaped filter lets through only matching events, counting the rest."""
    got, marker = Recorder(), Recorder()
    bus.subscribe(
        "photo.*",
        got,
        filter={
            "conditions": [
                {"field": "data.priority", "operator": "equals", "value": "high"},
                {"field": "data.size", "operator": "greaterThan", "value": 1_000_000},
            ],
            "operator": "AND",
        },
    )
    bus.subscribe("marker", marker)
    bus.publish("photo.uploaded", {"priority": "high", "size": 2_000_000})
    bus.publish("photo.uploaded", {"priority": "low", "size": 2_000_000})
    bus.publish("photo.uploaded", {"priority": "high", "size": 10})
    bus.publish("marker")
    marker.wait(1)
    got.wait(1)
    assert len(got.events) == 1
    assert bus.get_stats().events_filtered == 2


def test_callable_filter(bus: EventBus) -> None:
    """A plain callable works as a filter."""
    got, marker = Recorder(), Recorder()
    bus.subscribe("n.*", got, filter=lambda event: event.data["n"] % 2 == 0)
    bus.subscribe("marker", marker)
    for n in range(6):
        bus.publish("n.value", {"n": n})
    bus.publish("marker")
    marker.wait(1)
    got.wait(3)
    assert [e.data["n"] for e in got.events] == [0, 2, 4]


def test_order_kept_over_1000_events(bus: EventBus) -> None:
    """One subscription sees 1,000 events in publish order, one at a time."""
    got = Recorder()
    running = []
    overlap = []

    def handler(event: Event) -> None:
        running.append(1)
        if len(running) > 1:
            overlap.append(event.data)
        got(event)
        running.pop()

    bus.subscribe("seq.*", handler)
    for n in range(1000):
        bus.publish("seq.n", n)
    events = got.wait(1000, timeout=30)
    assert [e.data for e in events] == list(range(1000))
    assert overlap == []


def test_concurrency_overlaps_handlers(bus: EventBus) -> None:
    """concurrency=3 runs three handlers of one subscription at the same time."""
    barrier = threading.Barrier(3, timeout=5)
    passed = Recorder()

    def handler(event: Event) -> None:
        barrier.wait()
        passed(event)

    bus.subscribe("work.*", handler, concurrency=3)
    for n in range(3):
        bus.publish("work.item", n)
    passed.wait(3)
    assert sorted(e.data for e in passed.events) == [0, 1, 2]


def test_failing_handler_retried_then_reported(bus: EventBus) -> None:
    """A failing handler is retried with backoff, then the error hook gets a HandlerError;
    another subscription's handler is unaffected."""
    attempts: list[tuple[int, float]] = []
    errors: list[tuple[EventBusError, Event | None]] = []
    reported = threading.Event()

    def flaky(event: Event) -> None:
        attempts.append((event.delivery_attempt, time.monotonic()))
        raise RuntimeError("disk full")

    @bus.on_error
    def hook(error: EventBusError, event: Event | None) -> None:
        errors.append((error, event))
        reported.set()

    healthy = Recorder()
    bus.subscribe("photo.uploaded", flaky, retry_on_error=True, max_retries=3)
    bus.subscribe("photo.uploaded", healthy)
    result = bus.publish("photo.uploaded", {"photoId": "1"})
    assert reported.wait(10)
    healthy.wait(1)
    assert [n for n, _ in attempts] == [1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    assert all(gap >= 0.009 for gap in gaps), gaps
    ((error, event),) = errors
    assert isinstance(error, HandlerError)
    assert not isinstance(error, HandlerTimeoutError)
    assert error.attempts == 4
    assert error.event_id == result.event_id
    assert isinstance(error.__cause__, RuntimeError)
    assert event is not None
    assert event.delivery_attempt == 4
    stats = bus.get_stats()
    assert stats.events_failed == 1
    assert stats.events_retried == 3
    assert stats.events_handled == 1


def test_failing_handler_without_retry_reported_once(bus: EventBus) -> None:
    """Without retry_on_error a failure is reported after one attempt."""
    errors: list[EventBusError] = []
    bus.on_error(lambda error, event: errors.append(error))
    bus.subscribe("x.y", lambda event: 1 / 0)
    bus.publish("x.y")
    wait_for(lambda: errors, what="the error hook")
    assert isinstance(errors[0], HandlerError)
    assert errors[0].attempts == 1


def test_handler_past_timeout_fails_and_next_events_proceed(bus: EventBus) -> None:
    """A handler past its timeout counts as failed; the subscription moves on to the next event."""
    release = threading.Event()
    handled = Recorder()
    errors: list[EventBusError] = []
    bus.on_error(lambda error, event: errors.append(error))

    def handler(event: Event) -> None:
        if event.data == "stuck":
            release.wait(10)
            return
        handled(event)

    bus.subscribe("t.*", handler, timeout=0.2)
    bus.publish("t.a", "stuck")
    bus.publish("t.a", "next-1")
    bus.publish("t.a", "next-2")
    handled.wait(2)
    assert [e.data for e in handled.events] == ["next-1", "next-2"]
    wait_for(lambda: errors, what="the timeout report")
    assert isinstance(errors[0], HandlerTimeoutError)
    stats = bus.get_stats()
    assert stats.handler_timeouts == 1
    assert stats.events_failed == 1
    assert stats.abandoned_handlers == 1
    assert bus.health_check().checks["handlers"].status == "degraded"
    release.set()
    wait_for(lambda: bus.get_stats().abandoned_handlers == 0, what="the stuck handler to return")


def test_timed_out_attempt_is_retried(bus: EventBus) -> None:
    """With retries, an attempt that timed out is tried again and can succeed."""
    release = threading.Event()
    handled = Recorder()

    def handler(event: Event) -> None:
        if event.delivery_attempt == 1:
            release.wait(10)
            return
        handled(event)

    bus.subscribe("r.*", handler, timeout=0.2, retry_on_error=True, max_retries=2)
    bus.publish("r.a", 1)
    (event,) = handled.wait(1)
    assert event.delivery_attempt == 2
    release.set()


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda bus: bus.publish("Bad Type!", {}), InvalidNameError),
        (lambda bus: bus.publish("photo..uploaded", {}), InvalidNameError),
        (lambda bus: bus.publish("", {}), InvalidNameError),
        (lambda bus: bus.publish(42, {}), InvalidNameError),
        (lambda bus: bus.publish_to_room("room with space", "a.b", {}), InvalidNameError),
        (lambda bus: bus.publish_to_room("{tag}", "a.b", {}), InvalidNameError),
        (lambda bus: bus.publish_to_user("", "a.b", {}), InvalidNameError),
        (lambda bus: bus.publish("a.b", {"when": object()}), SerializationError),
        (lambda bus: bus.publish("a.b", {"x": float("nan")}), SerializationError),
        (lambda bus: bus.publish("a.b", {}, headers={"k": 1}), SerializationError),
        (lambda bus: bus.publish("a.b", "x" * 2_000_000), EventTooLargeError),
        (lambda bus: bus.publish("a.b", {}, event_id="bad id"), InvalidNameError),
        (lambda bus: bus.subscribe("bad pattern", print), InvalidPatternError),
        (
            lambda bus: bus.subscribe("a.*", print, filter={"conditions": [{"operator": "nope"}]}),
            InvalidFilterError,
        ),
        (lambda bus: bus.join_room("bad room"), InvalidNameError),
    ],
)
def test_bad_input_raises_typed_error_and_sends_nothing(
    bus: EventBus, call: Callable[[EventBus], object], error: type[Exception]
) -> None:
    """Bad input raises a ValueError subclass before any I/O; nothing is published."""
    spy = Recorder()
    bus.subscribe("*", spy)
    with pytest.raises(error) as caught:
        call(bus)
    assert isinstance(caught.value, ValueError)
    bus.publish("marker")
    spy.wait(1)
    assert spy.types == ["marker"]
    assert bus.get_stats().events_published == 1


def test_validation_happens_before_connection_state(make_bus: BusFactory) -> None:
    """An unconnected bus still reports bad input as bad input, not as a state error."""
    bus = make_bus(connect=False)
    with pytest.raises(InvalidNameError):
        bus.publish("not valid", {})
    with pytest.raises(BusStateError, match="not connected"):
        bus.publish("valid.type", {})


def test_closed_bus_refuses_use(make_bus: BusFactory) -> None:
    """After disconnect, publish and connect raise BusClosedError (a RuntimeError)."""
    bus = make_bus()
    bus.disconnect()
    assert not bus.is_connected()
    with pytest.raises(BusClosedError):
        bus.publish("a.b")
    with pytest.raises(RuntimeError):
        bus.connect()
    bus.disconnect()  # twice is fine


def test_with_block_leaves_no_thread_running(transport_url: str) -> None:
    """`with bus:` starts its threads on enter and joins every one of them on exit."""
    before = set(threading.enumerate())
    got = Recorder()
    with EventBus.from_url(transport_url, service_name="scoped") as bus:
        assert bus.is_connected()
        bus.subscribe("a.*", got)
        bus.subscribe("b.*", got, timeout=1.0)
        bus.join_room("r1")
        bus.publish("a.one")
        bus.publish("b.two")
        got.wait(2)
        assert len(set(threading.enumerate()) - before) > 0
    assert not bus.is_connected()
    wait_for(lambda: set(threading.enumerate()) <= before, timeout=5, what="threads to end")


def test_disconnect_drains_queued_handlers(make_bus: BusFactory) -> None:
    """Events already received are handled before disconnect returns."""
    bus = make_bus()
    done: list[int] = []

    def slow(event: Event) -> None:
        time.sleep(0.01)
        done.append(event.data)

    bus.subscribe("slow.*", slow)
    for n in range(20):
        bus.publish("slow.n", n)
    wait_for(lambda: bus.get_stats().events_received == 20, what="all events queued")
    bus.disconnect(timeout=5)
    assert done == list(range(20))


@pytest.mark.parametrize("batch_size", [1, 50])
def test_handlers_may_publish_while_the_bus_disconnects(
    make_bus: BusFactory, batch_size: int
) -> None:
    """A queued handler that publishes a follow-up while disconnect() drains it succeeds
    (batched or not: the batch is flushed after the drain); subscribing then is refused."""
    bus = make_bus(performance=PerformanceConfig(batch_size=batch_size, batch_interval=0.5))
    watcher = make_bus()
    followed = Recorder()
    watcher.subscribe("done.*", followed)
    failures: list[BaseException] = []
    started = threading.Event()

    def work(event: Event) -> None:
        started.set()
        time.sleep(0.02)
        try:
            bus.publish("done.n", event.data)
        except BaseException as exc:
            failures.append(exc)
            raise

    bus.subscribe("work.*", work)
    for n in range(10):
        watcher.publish("work.n", n)
    wait_for(lambda: bus.get_stats().events_received == 10, what="all work queued")
    assert started.wait(5)
    closer = threading.Thread(target=bus.disconnect, kwargs={"timeout": 5})
    closer.start()
    wait_for(lambda: bus._state.value == "closing", timeout=5, what="the bus closing")
    with pytest.raises(BusClosedError):
        bus.subscribe("late.*", followed)
    closer.join(10)
    assert failures == []
    assert sorted(e.data for e in followed.wait(10, timeout=10)) == list(range(10))
    with pytest.raises(BusClosedError):
        bus.publish("done.after", 0)


def test_stats_snapshot(bus: EventBus) -> None:
    """get_stats counts publishes, receipts, handling, and handler latency percentiles."""
    got = Recorder()
    bus.subscribe("s.*", got)
    for n in range(5):
        bus.publish("s.n", n)
    got.wait(5)
    wait_for(lambda: bus.get_stats().events_handled == 5, what="handled count")
    stats = bus.get_stats()
    assert stats.events_published == 5
    assert stats.events_received == 5
    assert stats.active_subscriptions == 1
    assert stats.handler_p50_ms is not None
    assert stats.handler_p99_ms is not None
    assert stats.handler_p50_ms <= stats.handler_p99_ms
    assert stats.delivery_p50_ms is not None
    assert stats.subscriptions[0].handled == 5
    assert stats.as_dict()["events_published"] == 5
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.events_published = 0  # type: ignore[misc]


def test_health_check_healthy_then_unhealthy_after_disconnect(make_bus: BusFactory) -> None:
    """health_check reports healthy with per-check details, unhealthy once disconnected."""
    bus = make_bus()
    health = bus.health_check()
    assert health.status == "healthy", health
    assert health.healthy
    assert {"transport", "listener", "last_message", "handlers", "queues"} <= set(health.checks)
    assert health.checks["transport"].value is not None
    assert health.uptime >= 0
    assert health.client_id == bus.client_id
    bus.disconnect()
    assert bus.health_check().status == "unhealthy"


def test_full_queue_drops_oldest_and_counts(make_bus: BusFactory) -> None:
    """A full subscription queue drops by policy, counts it, and health shows it."""
    bus = make_bus(queue_size=5)
    gate = threading.Event()
    got = Recorder()

    def handler(event: Event) -> None:
        gate.wait(10)
        got(event)

    bus.subscribe("q.*", handler)
    for n in range(20):
        bus.publish("q.n", n)
    wait_for(lambda: bus.get_stats().events_received == 20, what="all events offered")
    gate.set()
    events = got.wait(6)
    stats = bus.get_stats()
    assert stats.events_dropped == 14
    assert stats.subscriptions[0].dropped == 14
    assert [e.data for e in events] == [0, 15, 16, 17, 18, 19]
    assert bus.health_check().checks["queues"].status == "degraded"


def test_batched_publishing_flushes_in_order(make_bus: BusFactory) -> None:
    """With batching on, publishes are queued, sent in order, and flush() waits for them."""
    bus = make_bus(performance=PerformanceConfig(batch_size=50, batch_interval=0.5))
    got = Recorder()
    bus.subscribe("b.*", got)
    results = [bus.publish("b.n", n) for n in range(120)]
    assert all(r.receivers is None for r in results)
    assert bus.flush(timeout=5)
    events = got.wait(120)
    assert [e.data for e in events] == list(range(120))
    assert bus.get_stats().events_published == 120


def test_sequence_gap_reported(bus: EventBus) -> None:
    """A jump in a publisher's sequence numbers on a channel fires on_gap and counts."""
    gaps: list[Gap] = []
    bus.on_gap(gaps.append)
    got = Recorder()
    bus.subscribe("g.*", got)
    channel = bus.publish("g.start").channel
    got.wait(1)
    for sequence in (1, 2, 5):  # 3 and 4 never arrive
        body = encode(
            event_id=new_event_id(),
            event_type="g.a",
            source="gapper",
            moment=dt.datetime.now(dt.UTC),
            data=sequence,
            publisher="gapper:host:1:1",
        )
        bus._require_connected().publish(channel, seal(body, sequence), 1.0)
    got.wait(4)
    wait_for(lambda: gaps, what="a gap report")
    assert [(g.reason, g.missed, g.publisher) for g in gaps] == [("sequence", 2, "gapper:host:1:1")]
    assert bus.get_stats().gaps_detected == 1


def test_duplicate_event_id_handled_once(bus: EventBus) -> None:
    """A retried publish with the same event_id is handled once."""
    got, marker = Recorder(), Recorder()
    bus.subscribe("d.*", got)
    bus.subscribe("marker", marker)
    first = bus.publish("d.x", 1)
    bus.publish("d.x", 1, event_id=first.event_id)
    bus.publish("marker")
    marker.wait(1)
    got.wait(1)
    assert len(got.events) == 1
