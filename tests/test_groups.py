"""Durable groups through the public API, on memory:// and real Redis (in-process buses).

Worker-process tests (kill -9, 3 consumer processes) live in tests/test_groups_processes.py.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventbus import Event, EventBus, Gap, GroupOptions, PerformanceConfig, ValidationError

from _helpers import Recorder, wait_for
from _servers import redis_version

BusFactory = Callable[..., EventBus]
_names = itertools.count(1)


@pytest.fixture
def make_bus(transport_url: str) -> Iterator[BusFactory]:
    """Connected buses on the test's broker; all disconnected at teardown."""
    buses: list[EventBus] = []

    def make(service_name: str | None = None, **options: Any) -> EventBus:
        options.setdefault("performance", PerformanceConfig(retry_delay=0.01, retry_max_delay=0.05))
        bus = EventBus.from_url(
            transport_url, service_name=service_name or f"g{next(_names)}", **options
        )
        buses.append(bus)
        bus.connect()
        return bus

    yield make
    for bus in buses:
        bus.disconnect(timeout=2.0)


FAST = GroupOptions(claim_idle=0.3, max_deliveries=3, block=0.1)


def test_each_event_handled_once_per_group_and_fanout_sees_all(make_bus: BusFactory) -> None:
    """Two consumers of one group share 200 events, each handled once; a second group and a
    fan-out subscriber each get all 200."""
    a, b, c, publisher = make_bus(), make_bus(), make_bus(), make_bus()
    handled: Counter[int] = Counter()
    lock = threading.Lock()

    def work(event: Event) -> None:
        with lock:
            handled[event.data] += 1

    a.subscribe("order.*", work, group="billing", group_options=FAST)
    b.subscribe("order.*", work, group="billing", group_options=FAST)
    audit, fanout = Recorder(), Recorder()
    c.subscribe("order.*", audit, group="audit", group_options=FAST)
    c.subscribe("order.*", fanout)
    publisher.get_group_patterns()  # the publisher learns of the groups (it also would, async)
    for n in range(200):
        publisher.publish("order.placed", n)
    audit.wait(200, timeout=20)
    fanout.wait(200, timeout=20)
    wait_for(lambda: sum(handled.values()) >= 200, timeout=20, what="200 handled")
    assert handled == Counter(range(200))
    assert {e.group for e in audit.events} == {"audit"}

    def acked() -> int:
        return sum(s.acked for bus in (a, b) for s in bus.get_stats().groups)

    wait_for(lambda: acked() == 200, what="200 acknowledged")
    stats = [s for bus in (a, b) for s in bus.get_stats().groups]
    assert all(s.read > 0 for s in stats), "both consumers should get a share"


def test_room_events_do_not_enter_groups(make_bus: BusFactory) -> None:
    """publish_to_room reaches room members only; plain publishes and broadcasts go into
    matching groups."""
    consumer, publisher = make_bus(), make_bus()
    got = Recorder()
    consumer.subscribe("note.*", got, group="notes", group_options=FAST)
    publisher.get_group_patterns()
    publisher.publish_to_room("somewhere", "note.room", 1)
    publisher.broadcast("note.broadcast", 2)
    publisher.publish("note.plain", 3)
    got.wait(2)
    wait_for(lambda: consumer.get_groups()["notes"].pending == 0, what="acks")
    assert sorted(e.type for e in got.events) == ["note.broadcast", "note.plain"]


def test_failing_handler_goes_to_the_dead_letter_stream_and_replays(make_bus: BusFactory) -> None:
    """An event whose handler always fails is delivered max_deliveries times, then lands in the
    dead-letter stream with its error; a replay after a fix handles it."""
    bus, publisher = make_bus(), make_bus()
    attempts: list[int] = []
    fixed = threading.Event()
    done = Recorder()

    def handler(event: Event) -> None:
        attempts.append(event.delivery_attempt)
        if not fixed.is_set():
            raise RuntimeError("thumbnail service down")
        done(event)

    bus.subscribe("photo.uploaded", handler, group="thumbs", group_options=FAST)
    publisher.get_group_patterns()
    published = publisher.publish("photo.uploaded", {"photoId": "1"})
    wait_for(lambda: bus.dead_letters("thumbs"), timeout=15, what="a dead letter")
    (letter,) = bus.dead_letters("thumbs")
    assert attempts == [1, 2, 3]
    assert "thumbnail service down" in letter.error
    assert letter.deliveries == 3
    assert bus.get_groups()["thumbs"].dead_letters == 1
    fixed.set()
    assert bus.replay_dead_letters("thumbs") == 1
    (event,) = done.wait(1, timeout=10)
    assert event.id == published.event_id
    assert bus.dead_letters("thumbs") == []
    assert bus.purge_dead_letters("thumbs") == 0


def test_a_stuck_consumers_events_are_taken_over(make_bus: BusFactory) -> None:
    """Events held by a consumer that never finishes are claimed by another after claim_idle,
    with delivery_attempt 2."""
    stuck_bus, live_bus, publisher = make_bus(), make_bus(), make_bus()
    release = threading.Event()
    taken = threading.Event()

    def stuck(event: Event) -> None:
        taken.set()
        release.wait(20)

    got = Recorder()
    stuck_bus.subscribe("job.*", stuck, group="jobs", group_options=FAST)
    publisher.get_group_patterns()
    publisher.publish("job.run", 1)
    assert taken.wait(10)
    live_bus.subscribe("job.*", got, group="jobs", group_options=FAST)
    (event,) = got.wait(1, timeout=10)
    assert event.delivery_attempt == 2
    release.set()


def test_a_group_has_one_pattern(make_bus: BusFactory) -> None:
    """Subscribing a registered group with another pattern raises before consuming."""
    bus = make_bus()
    bus.subscribe("a.*", Recorder(), group="one")
    with pytest.raises(ValidationError, match="registered with pattern"):
        bus.subscribe("b.*", Recorder(), group="one")
    assert bus.get_group_patterns() == {"one": "a.*"}


def test_group_created_from_the_beginning_gets_earlier_events(make_bus: BusFactory) -> None:
    """start="0" on an existing stream delivers what is still in it."""
    first, second = make_bus(), make_bus()
    first.subscribe("x.*", Recorder(), group="early")
    first.publish("x.one", 1)
    first.publish("x.two", 2)
    got = Recorder()
    second.subscribe(
        "x.*", got, group="late-readers", group_options=GroupOptions(start="0", block=0.1)
    )
    first.get_group_patterns()  # the publisher learns of the new group
    first.publish("x.three", 3)
    got.wait(1)
    assert [e.data for e in got.events] == [3]  # a new group's stream starts empty


def test_unsubscribe_stops_the_consumer(make_bus: BusFactory) -> None:
    """After unsubscribe, a group consumer reads nothing more; the events wait in the stream."""
    bus, publisher = make_bus(), make_bus()
    got = Recorder()
    sub = bus.subscribe("u.*", got, group="quitters", group_options=FAST)
    publisher.get_group_patterns()
    publisher.publish("u.one")
    got.wait(1)
    assert bus.unsubscribe(sub.id)
    publisher.publish("u.two")
    wait_for(lambda: bus.get_groups()["quitters"].lag in (1, None), what="the backlog")
    assert len(got.events) == 1
    assert bus.get_stats().groups == ()


def test_retention_smaller_than_the_backlog_reports_the_loss(
    make_bus: BusFactory, transport_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Events that retention trims before the group read them are reported as a gap with
    reason "trimmed" and counted, never lost silently. Redis < 7.0 cannot count them (no
    stream read counters): the consumer says so, once, in a warning (docs/groups.md)."""
    counts = transport_url.startswith("memory") or redis_version(transport_url) >= (7, 0)
    consumer, publisher = make_bus(), make_bus()
    gaps: list[Gap] = []
    consumer.on_gap(gaps.append)
    release = threading.Event()
    options = GroupOptions(maxlen=20, max_in_flight=1, batch_size=1, claim_idle=0.3, block=0.1)
    consumer.subscribe(
        "flood.*", lambda event: release.wait(20), group="small", group_options=options
    )
    publisher.get_group_patterns()
    caplog.set_level(logging.WARNING, logger="eventbus.groups")
    for n in range(400):  # Redis's MAXLEN ~ trims whole nodes of 100 entries
        publisher.publish("flood.item", n)
    if not counts:
        assert publisher.get_groups()["small"].length < 400  # trimmed unread, all the same
        uncountable = "could not count the events its retention trimmed"
        wait_for(lambda: uncountable in caplog.text, timeout=10, what="the warning")
        release.set()

        def caught_up() -> bool:  # seen by a later look at the group, which warns no more
            stats = consumer.get_stats().groups[0]
            return stats.read > 1 and stats.backlog == 0 and stats.pending == 0

        wait_for(caught_up, timeout=10, what="the consumer to read what was left")
        assert caplog.text.count(uncountable) == 1
        return
    wait_for(lambda: [g for g in gaps if g.reason == "trimmed"], timeout=10, what="a trimmed gap")
    trimmed = [g for g in gaps if g.reason == "trimmed"]
    assert sum(g.missed or 0 for g in trimmed) >= 200
    assert consumer.get_stats().groups[0].lost >= 200
    release.set()


def test_health_and_stats_show_the_groups(make_bus: BusFactory) -> None:
    """health_check has a groups check; get_stats().groups lists each group consumer."""
    bus = make_bus()
    bus.subscribe("h.*", Recorder(), group="healthy", group_options=FAST)
    health = bus.health_check()
    assert health.checks["groups"].status == "healthy"
    (stats,) = bus.get_stats().groups
    assert (stats.group, stats.pattern) == ("healthy", "h.*")
    assert stats.consumer.startswith(bus.client_id)
