"""eventbus.testing.RecordingBus: recording, assertions, deterministic drain, and parity
with a real bus (validation errors, the decoded envelope, patterns, filters, groups)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from eventbus import (
    BusClosedError,
    BusStateError,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    EventTooLargeError,
    FilterError,
    GroupOptions,
    HandlerError,
    InvalidFilterError,
    InvalidNameError,
    InvalidPatternError,
    SerializationError,
    Subscription,
    ValidationError,
)
from eventbus._runtime.bus import THREADED, wire
from eventbus.testing import DrainLimitError, RecordingBus

from _helpers import Recorder


@pytest.fixture
def bus() -> Iterator[RecordingBus]:
    """A connected recording bus, closed after the test."""
    with RecordingBus(service_name="photo-api") as recording:
        yield recording


# -- the same class as EventBus --------------------------------------------------------


def _public_members(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")} | {"__enter__", "__exit__"}


def test_is_the_real_event_bus_with_only_its_own_additions() -> None:
    """RecordingBus is an EventBus that keeps the real bus's members: of EventBus's public
    members it redefines only how it describes itself (its clients, its health)."""
    bus = RecordingBus()
    assert isinstance(bus, EventBus)
    redefined = sorted(_public_members(EventBus) & set(vars(RecordingBus)))
    assert redefined == ["get_clients", "health_check"]
    assert {"published", "find_published", "assert_published", "drain", "clear"} <= set(
        vars(RecordingBus)
    )


def test_subscription_handle_overrides_what_reads_the_route(bus: RecordingBus) -> None:
    """The handle is a Subscription whose members all work (id, pattern, stats, with)."""
    handler = Recorder()
    with bus.subscribe("photo.*", handler) as sub:
        assert isinstance(sub, Subscription)
        assert (sub.pattern, sub.handler, sub.active) == ("photo.*", handler, True)
        assert sub.id in repr(sub)
        assert "active" in repr(sub)
        assert [s.id for s in bus.subscriptions()] == [sub.id]
        bus.publish("photo.uploaded")
        assert sub.stats().queued == 1
    assert sub.active is False
    assert bus.subscriptions() == []
    assert sub.unsubscribe() is False
    assert bus.drain() == 0
    assert handler.events == []


def test_the_seam_is_wired_before_connecting_only() -> None:
    """wire() gives a bus its transport and executor; a connected bus cannot be rewired."""
    bus = RecordingBus()
    with bus:
        with pytest.raises(BusStateError, match="before it connects"):
            wire(bus, THREADED)
        assert bus.health_check().checks["transport"].detail.startswith("recording ping")


def test_lifecycle_errors_match_the_real_bus() -> None:
    """Publishing before connect raises BusStateError; after disconnect BusClosedError."""
    bus = RecordingBus()
    with pytest.raises(BusStateError, match="not connected"):
        bus.publish("photo.uploaded")
    assert bus.health_check().status == "unhealthy"
    bus.subscribe("photo.*", print)  # subscribing before connect is fine, as for EventBus
    with bus:
        assert bus.is_connected()
        assert bus.health_check().healthy
        bus.publish("photo.uploaded")
    assert not bus.is_connected()
    with pytest.raises(BusClosedError):
        bus.publish("photo.uploaded")
    with pytest.raises(BusClosedError):
        bus.connect()
    with pytest.raises(BusClosedError):
        bus.subscribe("photo.*", print)
    assert len(bus.published) == 1  # the record stays readable


def test_from_url_never_connects_to_the_server() -> None:
    """from_url/from_env build a RecordingBus from a real config and never do I/O."""
    bus = RecordingBus.from_url("redis://127.0.0.1:1/0", service_name="photo-api")
    assert isinstance(bus, RecordingBus)
    assert bus.config.redis is not None
    with bus:
        bus.publish("photo.uploaded", {"photoId": "1"})
    assert bus.published[0].source == "photo-api"
    env = RecordingBus.from_env({"SERVICE_NAME": "worker", "EVENTBUS_URL": "redis://h:1/0"})
    assert isinstance(env, RecordingBus)
    assert env.service_name == "worker"
    with pytest.raises(ValueError, match="not both"):
        RecordingBus(EventBusConfig(service_name="a"), service_name="b")


# -- parity with a real bus --------------------------------------------------------------


def _bad_calls() -> list[tuple[str, Callable[[EventBus], Any]]]:
    def handler(event: Event) -> None:
        pass

    return [
        ("event type", lambda b: b.publish("photo uploaded")),
        ("empty type", lambda b: b.publish("")),
        ("room", lambda b: b.publish_to_room("bad room", "x.y")),
        ("user id", lambda b: b.publish_to_user("bad/user", "x.y")),
        ("broadcast type", lambda b: b.broadcast("x..y")),
        ("data", lambda b: b.publish("x.y", {"when": object()})),
        ("nan", lambda b: b.publish("x.y", float("nan"))),
        ("headers", lambda b: b.publish("x.y", headers={"k": 1})),  # type: ignore[dict-item]
        ("event id", lambda b: b.publish("x.y", event_id="has space")),
        ("size", lambda b: b.publish("x.y", "a" * 3000)),
        ("pattern", lambda b: b.subscribe("photo uploaded", handler)),
        ("handler", lambda b: b.subscribe("x.*", "not callable")),  # type: ignore[arg-type]
        ("operator", lambda b: b.subscribe("x.*", handler, filter={"field": "data.a"})),
        (
            "unknown operator",
            lambda b: b.subscribe(
                "x.*", handler, filter={"field": "data.a", "operator": "like", "value": 1}
            ),
        ),
        ("concurrency", lambda b: b.subscribe("x.*", handler, concurrency=0)),
        ("timeout", lambda b: b.subscribe("x.*", handler, timeout=-1)),
        ("retries", lambda b: b.subscribe("x.*", handler, max_retries=-1)),
        ("group name", lambda b: b.subscribe("x.*", handler, group="a b")),
        ("group options", lambda b: b.subscribe("x.*", handler, group_options=GroupOptions())),
        (
            "group start",
            lambda b: b.subscribe("x.*", handler, group="g", group_options=GroupOptions(start="1")),
        ),
        ("join", lambda b: b.join_room("")),
    ]


@pytest.mark.parametrize(("what", "call"), _bad_calls(), ids=[w for w, _ in _bad_calls()])
def test_bad_input_raises_what_the_real_bus_raises(
    what: str, call: Callable[[EventBus], Any]
) -> None:
    """Each bad call raises the same typed error, with the same message, on both buses."""
    options = {"service_name": "photo-api", "max_event_size": 2048}
    errors = []
    real = EventBus.from_url(f"memory://testing-{uuid.uuid4().hex[:8]}", **options)
    recording = RecordingBus(EventBusConfig(url="memory://", **options))  # type: ignore[arg-type]
    for subject in (real, recording):
        with subject:
            with pytest.raises(EventBusError) as info:
                call(subject)
            # The encoded size depends on the client id, whose instance number
            # differs between the two buses (and by test order): compare the rest.
            message = re.sub(r"is \d+ bytes encoded", "is N bytes encoded", str(info.value))
            errors.append((type(info.value), message))
    assert errors[0] == errors[1]
    assert issubclass(errors[0][0], ValidationError | ValueError)
    assert recording.published == []


def test_named_error_types() -> None:
    """Spot checks that the parity above compares the right errors."""
    with RecordingBus(EventBusConfig(service_name="s", max_event_size=100)) as bus:
        with pytest.raises(InvalidNameError):
            bus.publish("bad type")
        with pytest.raises(SerializationError):
            bus.publish("x.y", {1, 2})
        with pytest.raises(EventTooLargeError) as info:
            bus.publish("x.y", "a" * 200)
        assert info.value.limit == 100
        with pytest.raises(InvalidPatternError):
            bus.subscribe("a b", print)
        with pytest.raises(InvalidFilterError):
            bus.subscribe("x.*", print, filter={"operator": "AND", "conditions": []})


def test_handler_gets_the_event_a_real_bus_delivers(transport_url: str) -> None:
    """Apart from its time, a delivered Event equals the one a real bus (memory and Redis)
    hands its handler for the same publishes: plain, room, user, broadcast, headers."""
    calls: list[Callable[[EventBus, str], Any]] = [
        lambda b, i: b.publish(
            "photo.uploaded",
            {"photoId": "1", "sizes": [1, 2.5], "ok": True, "none": None, "é": "ü"},
            headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "cid": "c-1"},
            event_id=i,
        ),
        lambda b, i: b.publish_to_room("photo:1", "photo.processing.started", [1], event_id=i),
        lambda b, i: b.publish_to_user("user-456", "photo.notify", "hi", event_id=i),
        lambda b, i: b.broadcast("photo.maintenance", None, event_id=i),
    ]
    ids = [f"evt-{n}-{uuid.uuid4().hex[:6]}" for n in range(len(calls))]
    got: dict[str, list[Event]] = {}
    real_handler = Recorder()
    with EventBus.from_url(transport_url, service_name="photo-api") as real:
        real.join_room("photo:1")
        real.join_room("user:user-456")
        real.subscribe("photo.*", real_handler)
        for call, event_id in zip(calls, ids, strict=True):
            call(real, event_id)
        got["real"] = real_handler.wait(len(calls), timeout=10)
    recorded = Recorder()
    with RecordingBus(service_name="photo-api") as bus:
        bus.join_room("photo:1")
        bus.join_room("user:user-456")
        bus.subscribe("photo.*", recorded)
        for call, event_id in zip(calls, ids, strict=True):
            call(bus, event_id)
        assert bus.drain() == len(calls)
        got["recording"] = recorded.events
        assert [attrs.evolve(e, time=None) for e in bus.published] == [
            attrs.evolve(e, time=None) for e in recorded.events
        ]

    def comparable(events: list[Event]) -> list[dict[str, Any]]:
        rows = [attrs.asdict(e) for e in events]
        for row in rows:
            assert row.pop("time").tzinfo is not None
        return sorted(rows, key=lambda row: row["id"])

    assert comparable(got["recording"]) == comparable(got["real"])
    assert got["recording"][1].room == "photo:1"
    assert (got["recording"][2].room, got["recording"][2].user) == ("user:user-456", "user-456")
    assert got["recording"][3].broadcast is True


def test_patterns_follow_redis_glob_rules(bus: RecordingBus) -> None:
    """`*` spans dots, `?` is one character, `[abc]` a class (docs/concepts.md, "Patterns")."""
    subs = {p: Recorder() for p in ("photo.*", "*.processing.*", "photo.?", "[pv]ideo.x", "*")}
    for pattern, handler in subs.items():
        bus.subscribe(pattern, handler)
    for event_type in ("photo.uploaded", "photo.processing.completed", "photo.a", "video.x"):
        bus.publish(event_type)
    bus.drain()
    assert subs["photo.*"].types == ["photo.uploaded", "photo.processing.completed", "photo.a"]
    assert subs["*.processing.*"].types == ["photo.processing.completed"]
    assert subs["photo.?"].types == ["photo.a"]
    assert subs["[pv]ideo.x"].types == ["video.x"]
    assert len(subs["*"].types) == 4


def test_filters_run_before_the_handler(bus: RecordingBus) -> None:
    """A Node-style filter passes only matching events; rejected ones are counted."""
    handler = Recorder()
    bus.subscribe(
        "photo.*",
        handler,
        filter={
            "operator": "AND",
            "conditions": [
                {"field": "data.priority", "operator": "equals", "value": "high"},
                {"field": "data.size", "operator": "greaterThan", "value": 1_000},
            ],
        },
    )
    bus.publish("photo.uploaded", {"priority": "high", "size": 5_000})
    bus.publish("photo.uploaded", {"priority": "low", "size": 5_000})
    bus.publish("photo.uploaded", {"priority": "high", "size": 10})
    assert bus.drain() == 1
    assert [e.data["size"] for e in handler.events] == [5_000]
    assert bus.get_stats().events_filtered == 2


def test_a_filter_that_raises_is_reported_never_silent(bus: RecordingBus) -> None:
    """A raising filter skips the event, goes to on_error, and drain() raises it."""
    hooked: list[tuple[EventBusError, Event | None]] = []
    bus.on_error(lambda error, event: hooked.append((error, event)))
    handler = Recorder()
    bus.subscribe("photo.*", handler, filter=lambda event: event.data["missing"])
    bus.publish("photo.uploaded", {})
    with pytest.raises(FilterError) as info:
        bus.drain()
    assert isinstance(info.value.__cause__, KeyError)
    assert handler.events == []
    assert bus.errors == [info.value]
    assert hooked[0][0] is info.value
    assert hooked[0][1] is not None
    assert bus.get_stats().filter_errors == 1


# -- drain: deterministic, in the caller's thread ----------------------------------------


def test_handlers_run_only_on_drain_in_the_callers_thread(bus: RecordingBus) -> None:
    """Nothing runs at publish; drain() runs everything in this thread, in order, and
    what handlers publish runs in the same drain(), queued behind."""
    order: list[tuple[str, str, int]] = []

    @bus.on("photo.uploaded")
    def process(event: Event) -> None:
        order.append(("process", event.type, threading.get_ident()))
        bus.publish("photo.processing.completed", {"photoId": event.data["photoId"]})

    @bus.on("photo.*")
    def audit(event: Event) -> None:
        order.append(("audit", event.type, threading.get_ident()))

    bus.publish("photo.uploaded", {"photoId": "1"})
    bus.publish("photo.uploaded", {"photoId": "2"})
    assert order == []
    assert bus.pending == 4
    assert bus.drain() == 6
    me = threading.get_ident()
    assert order == [
        ("process", "photo.uploaded", me),
        ("audit", "photo.uploaded", me),
        ("process", "photo.uploaded", me),
        ("audit", "photo.uploaded", me),
        ("audit", "photo.processing.completed", me),
        ("audit", "photo.processing.completed", me),
    ]
    assert bus.pending == 0
    assert bus.drain() == 0
    assert [e.data["photoId"] for e in bus.find_published("photo.processing.*")] == ["1", "2"]


def test_each_event_runs_its_subscriptions_in_the_order_they_were_made(
    bus: RecordingBus,
) -> None:
    """Subscriptions sharing a pattern do not run together: an event runs its
    subscriptions oldest first, then its durable groups'."""
    order: list[str] = []
    bus.subscribe("photo.*", lambda e: order.append("first"))
    bus.subscribe("photo.uploaded", lambda e: order.append("second"), group="thumbnails")
    bus.subscribe("photo.uploaded", lambda e: order.append("third"))
    bus.subscribe("photo.*", lambda e: order.append("fourth"))
    assert bus.publish("photo.uploaded").receivers == 4
    assert bus.drain() == 4
    assert order == ["first", "third", "fourth", "second"]


def test_eager_mode_runs_handlers_inside_publish() -> None:
    """With eager=True, publish() returns after the handlers (and their cascade) ran."""
    with RecordingBus(eager=True) as bus:
        seen: list[str] = []
        bus.on("a")(lambda e: (seen.append("a"), bus.publish("b")))
        bus.on("b")(lambda e: seen.append("b"))
        result = bus.publish("a")
        assert seen == ["a", "b"]
        assert result.receivers == 1
        assert bus.pending == 0
        bus.eager = False
        bus.publish("a")
        assert seen == ["a", "b"]
        assert bus.pending == 1


def test_an_eager_publish_whose_handler_fails_raises_and_still_counts() -> None:
    """In eager mode the handler's failure is raised from publish(); the event was
    recorded and counted as published all the same."""
    with RecordingBus(eager=True) as bus:
        bus.subscribe("x", lambda event: 1 / 0)
        with pytest.raises(HandlerError):
            bus.publish("x")
        assert len(bus.published) == 1
        assert bus.get_stats().events_published == 1
        assert bus.pending == 0


def test_a_retried_publish_is_recorded_twice_and_handled_once(bus: RecordingBus) -> None:
    """Reusing an event_id (a retried publish) reaches each subscription once, as on a
    real bus, while both publishes are recorded."""
    handler, room_handler = Recorder(), Recorder()
    bus.subscribe("photo.*", handler)
    bus.subscribe("photo.uploaded", handler)
    bus.join_room("photo:1")
    bus.subscribe("room.*", room_handler)
    for _ in range(2):
        bus.publish("photo.uploaded", event_id="upload-1")
        bus.publish_to_room("photo:1", "room.update", event_id="update-1")
    assert bus.drain() == 3
    assert len(handler.events) == 2
    assert len(room_handler.events) == 1
    assert len(bus.published) == 4
    assert bus.get_stats().duplicates_dropped == 3  # one per pattern or channel


def test_subscriptions_get_only_later_events(bus: RecordingBus) -> None:
    """As with pub/sub, a subscription made after a publish does not get that event."""
    bus.publish("photo.uploaded")
    late = Recorder()
    bus.subscribe("photo.*", late)
    assert bus.drain() == 0
    assert late.events == []


def test_a_failing_handler_is_raised_from_drain_with_its_cause(bus: RecordingBus) -> None:
    """drain() runs everything, then raises the first HandlerError (cause: the handler's
    exception); every failure is in errors and went to the on_error hooks."""
    hooked: list[EventBusError] = []
    bus.on_error(lambda error, event: hooked.append(error))
    good = Recorder()
    bus.subscribe("photo.*", lambda event: event.data["nope"])
    bus.subscribe("photo.*", good)
    bus.publish("photo.uploaded", {"n": 1})
    bus.publish("photo.uploaded", {"n": 2})
    with pytest.raises(HandlerError) as info:
        bus.drain()
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.event_type == "photo.uploaded"
    assert info.value.attempts == 1
    assert "2 failures" in "".join(info.value.__notes__)
    assert len(good.events) == 2  # the other handler still ran for both events
    assert bus.errors == hooked
    assert len(hooked) == 2
    stats = bus.get_stats()
    assert (stats.events_failed, stats.events_handled) == (2, 2)


def test_raise_errors_false_only_records(bus: RecordingBus) -> None:
    """drain(raise_errors=False) returns and leaves the failures in errors."""
    bus.subscribe("x", lambda event: 1 / 0)
    bus.publish("x")
    assert bus.drain(raise_errors=False) == 1
    assert isinstance(bus.errors[0].__cause__, ZeroDivisionError)


def test_retries_run_at_once_with_rising_delivery_attempt(bus: RecordingBus) -> None:
    """retry_on_error retries without backoff; each attempt sees delivery_attempt + 1."""
    attempts: list[int] = []

    def flaky(event: Event) -> None:
        attempts.append(event.delivery_attempt)
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    sub = bus.subscribe("x", flaky, retry_on_error=True, max_retries=5)
    bus.publish("x")
    assert bus.drain() == 1
    assert attempts == [1, 2, 3]
    assert bus.errors == []
    assert (sub.stats().retried, sub.stats().handled) == (2, 1)
    bus.subscribe("y", lambda event: 1 / 0, retry_on_error=True, max_retries=1)
    bus.publish("y")
    with pytest.raises(HandlerError) as info:
        bus.drain()
    assert info.value.attempts == 2


def test_drain_limit_stops_a_publish_loop(bus: RecordingBus) -> None:
    """Handlers that publish each other's events forever stop at the limit, loudly."""
    bus.on("ping")(lambda e: bus.publish("pong"))
    bus.on("pong")(lambda e: bus.publish("ping"))
    bus.publish("ping")
    with pytest.raises(DrainLimitError) as info:
        bus.drain(limit=50)
    assert (info.value.limit, info.value.pending) == (50, 1)
    assert len(bus.published) == 51
    with pytest.raises(ValidationError):
        bus.drain(limit=0)


def test_drain_from_a_handler_is_refused(bus: RecordingBus) -> None:
    """A handler calling drain() fails (BusStateError as the cause), not a recursion."""
    bus.on("x")(lambda e: bus.drain())
    bus.publish("x")
    with pytest.raises(HandlerError) as info:
        bus.drain()
    assert isinstance(info.value.__cause__, BusStateError)


def test_publishes_from_other_threads_are_all_recorded(bus: RecordingBus) -> None:
    """The recording is thread-safe: app threads may publish while the test drains."""
    handler = Recorder()
    bus.subscribe("work.*", handler)

    def worker(n: int) -> None:
        for i in range(100):
            bus.publish(f"work.t{n}", {"i": i})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    bus.drain()
    for thread in threads:
        thread.join(timeout=30)
    bus.drain()
    assert len(bus.published) == 400
    assert len(handler.events) == 400
    assert [e.data["i"] for e in handler.events if e.type == "work.t2"] == list(range(100))


# -- groups ------------------------------------------------------------------------------


def test_a_group_gets_each_event_once_fan_out_gets_all(bus: RecordingBus) -> None:
    """Subscriptions sharing a group compete (one gets each event); fan-out ones all get
    it; group events carry their group; room events never enter groups."""
    first, second, fan_a, fan_b = Recorder(), Recorder(), Recorder(), Recorder()
    bus.subscribe("photo.uploaded", first, group="thumbnails")
    bus.subscribe("photo.uploaded", second, group="thumbnails")
    bus.subscribe("photo.*", fan_a)
    bus.subscribe("photo.*", fan_b)
    bus.join_room("photo:1")
    for n in range(3):
        bus.publish("photo.uploaded", {"n": n})
    bus.broadcast("photo.uploaded", {"n": 3})
    bus.publish_to_room("photo:1", "photo.uploaded", {"n": 4})
    bus.drain()
    group_events = first.events + second.events
    assert sorted(e.data["n"] for e in group_events) == [0, 1, 2, 3]
    assert {e.group for e in group_events} == {"thumbnails"}
    assert (
        [e.data["n"] for e in fan_a.events]
        == [0, 1, 2, 3, 4]
        == [e.data["n"] for e in fan_b.events]
    )
    assert {e.group for e in fan_a.events} == {None}
    assert bus.get_group_patterns() == {"thumbnails": "photo.uploaded"}
    with pytest.raises(ValidationError, match="one pattern"):
        bus.subscribe("photo.*", first, group="thumbnails")


def test_a_group_keeps_events_until_a_consumer_comes(bus: RecordingBus) -> None:
    """A group's events wait for a consumer (a stream), unlike fan-out (pub/sub)."""
    sub = bus.subscribe("order.*", Recorder(), group="billing")
    sub.unsubscribe()
    bus.publish("order.paid", {"id": 7})
    assert bus.get_groups()["billing"].lag == 1
    later = Recorder()
    bus.subscribe("order.*", later, group="billing")
    assert bus.drain() == 1
    assert later.events[0].data == {"id": 7}


def test_a_failing_group_event_is_redelivered_then_dead_lettered(bus: RecordingBus) -> None:
    """Up to max_deliveries deliveries (delivery_attempt counts them), then a dead
    letter; replaying it delivers it again."""
    attempts: list[int] = []
    broken = True

    def charge(event: Event) -> None:
        attempts.append(event.delivery_attempt)
        if broken:
            raise RuntimeError("card declined")

    bus.subscribe(
        "order.paid", charge, group="billing", group_options=GroupOptions(max_deliveries=3)
    )
    bus.publish("order.paid", {"id": 1})
    assert bus.drain(raise_errors=False) == 3
    assert attempts == [1, 2, 3]
    assert len(bus.errors) == 3
    letters = bus.dead_letters("billing")
    assert len(letters) == 1
    assert letters[0].deliveries == 3
    assert "card declined" in letters[0].error
    assert bus.get_stats().dead_lettered == 1
    broken = False
    assert bus.replay_dead_letters("billing") == 1
    assert bus.drain() == 1
    assert attempts[-1] == 1
    assert bus.dead_letters("billing") == []
    assert bus.purge_dead_letters("billing") == 0


# -- rooms ---------------------------------------------------------------------------------


def test_room_events_reach_handlers_only_after_join(bus: RecordingBus) -> None:
    """A room event is recorded either way; handlers get it only if the bus joined."""
    handler = Recorder()
    bus.subscribe("processing.*", handler)
    bus.publish_to_room("photo:1", "processing.update", {"progress": 10})
    bus.join_room("photo:1")
    assert bus.rooms == {"photo:1"}
    assert bus.get_room_members("photo:1") == [bus.client_id]
    bus.publish_to_room("photo:1", "processing.update", {"progress": 50})
    bus.publish_to_user("user-456", "processing.update", {"progress": 99})
    bus.drain()
    assert [e.data["progress"] for e in handler.events] == [50]
    bus.leave_room("photo:1")
    assert bus.get_room_members("photo:1") == []
    assert len(bus.find_published(room="photo:1")) == 2
    assert bus.find_published(user="user-456")[0].room == "user:user-456"


# -- assertions ----------------------------------------------------------------------------


def test_assert_published_matches_pattern_where_count_room_user(bus: RecordingBus) -> None:
    """assert_published returns the newest match; where= takes a data subset or a
    predicate; count= is exact; room=/user= select the target."""
    bus.publish("photo.uploaded", {"photoId": "1", "meta": {"w": 10, "h": 20}, "public": True})
    bus.publish("photo.uploaded", {"photoId": "2", "meta": {"w": 30, "h": 40}, "public": 1})
    bus.publish_to_user("user-456", "notification.new", {"text": "done"})
    assert bus.assert_published("photo.*").data["photoId"] == "2"
    assert bus.assert_published("photo.*", count=2).data["photoId"] == "2"
    assert bus.assert_published("photo.*", where={"meta": {"w": 10}}).data["photoId"] == "1"
    assert bus.assert_published("*", where={"public": True}).data["photoId"] == "1"
    assert bus.assert_published("*", where=lambda e: e.user is not None).type == (
        "notification.new"
    )
    bus.assert_published("notification.new", user="user-456", count=1)
    bus.assert_published("notification.*", room="user:user-456")
    bus.assert_not_published("photo.deleted")
    bus.assert_not_published("notification.*", user="someone-else")
    bus.assert_not_published("photo.*", where={"photoId": "3"})


def test_assertion_failures_list_what_was_published(bus: RecordingBus) -> None:
    """Failed assertions say what was expected and show every published event."""
    bus.publish("photo.uploaded", {"photoId": "1"})
    bus.publish_to_room("photo:1", "processing.update", {"progress": 5})
    with pytest.raises(AssertionError) as info:
        bus.assert_published("photo.*", where={"photoId": "9"})
    message = str(info.value)
    assert "expected an event matching 'photo.*' where data contains {'photoId': '9'}" in message
    assert "found 0" in message
    assert "Published (2):" in message
    assert "1. photo.uploaded {'photoId': '1'}" in message
    assert "2. processing.update {'progress': 5} (to room 'photo:1')" in message
    with pytest.raises(AssertionError, match=r"expected 2 event\(s\).*found 1"):
        bus.assert_published("photo.uploaded", count=2)
    with pytest.raises(AssertionError, match=r"expected no event matching 'photo\.\*'") as info:
        bus.assert_not_published("photo.*")
    assert "Matching (1):" in str(info.value)
    with pytest.raises(InvalidPatternError):
        bus.assert_published("photo uploaded")
    with pytest.raises(ValidationError):
        bus.assert_published("photo.*", count=0)
    with pytest.raises(ValidationError):
        bus.find_published("photo.*", where=42)  # type: ignore[arg-type]


def test_clear_forgets_published_pending_and_errors(bus: RecordingBus) -> None:
    """clear() empties the record and the queue; subscriptions stay."""
    handler = Recorder()
    bus.subscribe("x", handler)
    bus.publish("x")
    bus.clear()
    assert bus.published == []
    assert bus.pending == 0
    assert bus.drain() == 0
    bus.publish("x")
    assert bus.drain() == 1
    assert len(handler.events) == 1


def test_disconnect_drops_pending_deliveries_and_counts_them() -> None:
    """Pending deliveries are not run at disconnect: they are dropped and counted."""
    handler = Recorder()
    bus = RecordingBus()
    with bus:
        bus.subscribe("x", handler)
        bus.publish("x")
    assert bus.get_stats().events_dropped == 1
    assert bus.drain() == 0
    assert handler.events == []


def test_stats_and_clients_describe_the_recording(bus: RecordingBus) -> None:
    """get_stats, get_clients and health_check work without any server."""
    bus.subscribe("photo.*", Recorder())
    bus.publish("photo.uploaded")
    bus.drain()
    stats = bus.get_stats()
    assert (stats.events_published, stats.events_handled, stats.active_subscriptions) == (1, 1, 1)
    client = bus.get_clients()[0]
    assert client.client_id == bus.client_id
    assert client.subscriptions == ("photo.*",)
    assert client.client_id.startswith("photo-api:")
    assert bus.health_check().checks["transport"].status == "healthy"
    assert bus.flush() is True


# -- imports -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "allowed"),
    [("eventbus.testing", set()), ("eventbus.testing.pytest_plugin", {"pytest", "_pytest"})],
)
def test_importing_loads_no_redis_framework_or_test_helpers(module: str, allowed: set[str]) -> None:
    """eventbus.testing loads neither redis, a framework, pytest nor our test helpers;
    the plugin adds only pytest."""
    forbidden = {"redis", "socketio", "flask", "django", "celery", "pytest", "_pytest"}
    forbidden |= {"_servers", "conftest"}
    forbidden -= allowed
    code = (
        f"import sys, {module}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(forbidden)!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
