"""Fault injection against real redis-server processes (issue 3; docs/failure-modes.md).

A Redis that restarts, hangs, partitions or floods never hangs a request, never kills a
listener, and never loses an event silently. One test per scenario of the issue, each
through the public API, against servers that the tests start (``redis_server_factory``,
never the shared session server) and break:

1. server restarted mid-stream -> :func:`test_server_restart_mid_stream_resumes_and_loses_nothing_silently`
2. server hung (SIGSTOP) -> :func:`test_hung_server_turns_unhealthy_publish_raises_and_recovers`
3. ``CLIENT KILL TYPE pubsub`` -> :func:`test_client_kill_pubsub_reconnects_and_reports_a_gap`
4. slow handler, low ``client-output-buffer-limit pubsub`` ->
   :func:`test_slow_handler_is_never_cut_off_by_redis_and_drops_are_counted`
5. a raw non-UTF-8 / non-JSON message -> ``tests/test_poison.py``
6. a retried publish (duplicate id) -> :func:`test_publish_retried_after_a_timeout_is_handled_once`
7. fork -> ``tests/test_fork.py``
8. 100 connect/disconnect cycles -> :func:`test_connect_disconnect_cycles_leave_no_thread_or_connection`
9. network partition in a namespace -> :func:`test_network_partition_is_detected_and_healed`
   (skipped, with the reason, where ``ip netns`` does not work)

The issue's bounds (resume within 2 s, unhealthy within 3 s, reconnect within 1 s, raise
within the deadline) are behaviour, not benchmarks: each is asserted with ``MARGIN``
added, for a 2-core machine under load, and measured from the moment the fault starts
or ends (a server is back when it answers PING). Delivery is awaited on conditions with
deadlines; the only fixed sleeps keep a server down or paused, which is the scenario.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from eventbus import (
    Event,
    EventBus,
    EventBusError,
    Gap,
    PerformanceConfig,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
)

from _helpers import Recorder, wait_for
from _netns import NamespacedRedis, NetworkNamespace, netns_unusable
from _servers import RedisServer

#: Added to every bound of the issue: this 2-core machine changes speed with its load.
MARGIN = 1.0
#: How long any one condition may take before a test gives up (not a bound under test).
WAIT = 10.0

BusFactory = Callable[..., EventBus]
ServerFactory = Callable[..., RedisServer]


class Watch:
    """``on_gap`` and ``on_error`` hooks that record what they get, and when."""

    def __init__(self, bus: EventBus) -> None:
        self._cond = threading.Condition()
        self.gaps: list[tuple[float, Gap]] = []
        self.errors: list[tuple[float, EventBusError]] = []
        bus.on_gap(self._on_gap)
        bus.on_error(self._on_error)

    def _on_gap(self, gap: Gap) -> None:
        with self._cond:
            self.gaps.append((time.monotonic(), gap))
            self._cond.notify_all()

    def _on_error(self, error: EventBusError, _event: Event | None) -> None:
        with self._cond:
            self.errors.append((time.monotonic(), error))
            self._cond.notify_all()

    def gaps_since(self, moment: float, reason: str = "reconnect") -> list[tuple[float, Gap]]:
        """The gaps of ``reason`` reported after ``moment``, with their times."""
        with self._cond:
            return [(t, g) for t, g in self.gaps if t >= moment and g.reason == reason]

    def wait_gap(self, since: float, reason: str = "reconnect", timeout: float = WAIT) -> float:
        """Wait for a gap of ``reason`` reported after ``since``; return when it came."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.gaps_since(since, reason), timeout):
                pytest.fail(f"no {reason!r} gap within {timeout}s; gaps: {self.gaps!r}")
            return self.gaps_since(since, reason)[0][0]

    def wait_error(
        self, accept: Callable[[EventBusError], bool], what: str, timeout: float = WAIT
    ) -> tuple[float, EventBusError]:
        """Wait for a reported error that ``accept`` takes; return it and when it came."""

        def found() -> list[tuple[float, EventBusError]]:
            return [(t, e) for t, e in self.errors if accept(e)]

        with self._cond:
            if not self._cond.wait_for(found, timeout):
                pytest.fail(f"no {what} reported within {timeout}s; errors: {self.errors!r}")
            return found()[0]


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own."""
    return f"fault{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def make_bus() -> Iterator[BusFactory]:
    """``make_bus(url, service_name, **options)``: connected buses, all disconnected at teardown."""
    buses: list[EventBus] = []

    def make(url: str, service_name: str, **options: Any) -> EventBus:
        bus = EventBus.from_url(url, service_name=service_name, **options)
        buses.append(bus)
        bus.connect()
        return bus

    yield make
    for bus in reversed(buses):
        bus.disconnect(timeout=2.0)


class LinkLossLog(logging.Handler):
    """When the listener reported its link lost (monotonic clock).

    The transport logs ``Redis subscription link lost: <why>`` the moment its watchdog
    gives up on the link; :meth:`EventBus.health_check` shows it too, but only after
    its own ping (up to 1 s against a dead server), too coarse to time the watchdog.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._cond = threading.Condition()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Redis subscription link lost"):
            with self._cond:
                self.times.append(time.monotonic())
                self._cond.notify_all()

    def wait(self, since: float, timeout: float = WAIT) -> float:
        """Wait for a loss reported after ``since``; return when it was reported."""
        with self._cond:
            if not self._cond.wait_for(lambda: [t for t in self.times if t >= since], timeout):
                pytest.fail(f"the listener reported no lost link within {timeout}s")
            return min(t for t in self.times if t >= since)


@pytest.fixture
def link_losses() -> Iterator[LinkLossLog]:
    """A :class:`LinkLossLog` on the ``eventbus.transport`` logger for the test."""
    logger = logging.getLogger("eventbus.transport")
    handler, level = LinkLossLog(), logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.WARNING):
        logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _since(moment: float) -> float:
    return time.monotonic() - moment


def _deliver(bus: EventBus, got: Recorder, event_type: str, timeout: float = WAIT) -> float:
    """Publish ``event_type`` every 50 ms until ``got`` has one; return when it had.

    For a link that is coming back: a publish that raises a typed error meanwhile is
    fine (it said so), and so is one that nobody was subscribed to yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(TransportError):
            bus.publish(event_type, timeout=1.0)
        sent = time.monotonic()
        while time.monotonic() - sent < 0.05:
            if event_type in got.types:
                return time.monotonic()
            time.sleep(0.002)
        if time.monotonic() > deadline:
            pytest.fail(f"{event_type} not delivered within {timeout}s")


# -- 1. restart ------------------------------------------------------------------------

#: Scenario 1's batched bus: a batch never fills (so the flusher always waits
#: ``_FLUSH_INTERVAL`` after a failed attempt's backoff before it tries again).
_BATCH, _FLUSH_INTERVAL = 100, 3.0


def _is_flush_failure(error: EventBusError) -> bool:
    return isinstance(error, TransportError) and "publish of" in str(error)


@pytest.mark.slow
def test_server_restart_mid_stream_resumes_and_loses_nothing_silently(
    redis_server_factory: ServerFactory, make_bus: BusFactory, prefix: str
) -> None:
    """A server down ~3 s while events flow: unbatched publishes raise a typed error,
    batched ones are sent after the outage in order; the subscription resumes within 2 s
    of the server's return and reports a gap; every event sent is received."""
    server = redis_server_factory()
    url = f"{server.url}?key_prefix={prefix}"
    subscriber = make_bus(url, "restart-sub")
    watch = Watch(subscriber)
    got = Recorder()
    subscriber.subscribe("flow.*", got)
    direct = make_bus(url, "restart-direct", publish_timeout=1.0)
    batched = make_bus(
        url,
        "restart-batched",
        publish_timeout=1.0,
        performance=PerformanceConfig(batch_size=_BATCH, batch_interval=_FLUSH_INTERVAL),
    )
    batched_watch = Watch(batched)

    # An unbatched stream that is flowing when the server dies; it stops after five
    # publishes raised. Each outcome: None (sent) or the error the caller got.
    outcomes: dict[int, TransportError | None] = {}
    slowest_raise = 0.0

    def stream() -> None:
        nonlocal slowest_raise
        for n in range(10_000):
            began = time.monotonic()
            try:
                direct.publish("flow.direct", n)
            except TransportError as exc:
                outcomes[n] = exc
                slowest_raise = max(slowest_raise, _since(began))
                if sum(e is not None for e in outcomes.values()) == 5:
                    return
            else:
                outcomes[n] = None
            time.sleep(0.005)  # pacing the stream, not waiting for anything

    streamer = threading.Thread(target=stream, name="test-stream")
    streamer.start()
    got.wait(20)
    down_at = time.monotonic()
    server.kill()
    streamer.join(WAIT)
    assert not streamer.is_alive(), "the publisher hung while the server was down"

    # Buffered publishes during the outage: accepted at once, sent after it.
    buffered = [batched.publish("flow.batched", n) for n in range(10)]
    assert [r.receivers for r in buffered] == [None] * 10
    # Pub/sub is at-most-once: a buffered event sent before a subscriber has renewed
    # its subscription is lost to it (and reported to it as a gap). To check that the
    # buffered events do all arrive, the server comes back right after a failed flush:
    # the flusher's next try is >= 3 s later (backoff + batch interval), the
    # subscriber's renewal <= 2 s later (its backoff cap).
    failed_at, _ = batched_watch.wait_error(_is_flush_failure, "a failed flush")
    assert failed_at - down_at >= 2.5, "the outage did not last (a flush succeeded?)"
    server.start()  # returns when it answers PING
    up_at = time.monotonic()

    resumed_at = watch.wait_gap(since=down_at)
    resume = resumed_at - up_at
    assert resume <= 2.0 + MARGIN, f"subscriptions resumed {resume:.2f}s after the server"
    assert batched.flush(timeout=WAIT)
    direct.publish("flow.after", "after")

    raised = {n: e for n, e in outcomes.items() if e is not None}
    assert len(raised) == 5
    assert all(
        isinstance(e, TransportConnectionError | PublishTimeoutError) for e in raised.values()
    )
    assert all(isinstance(e.__cause__, redis.RedisError) for e in raised.values())
    assert slowest_raise <= 1.0 + MARGIN, f"a publish raised after {slowest_raise:.2f}s"
    sent = {("flow.direct", n) for n, e in outcomes.items() if e is None}
    sent |= {("flow.batched", n) for n in range(10)} | {("flow.after", "after")}

    def missing() -> set[tuple[str, object]]:
        return sent - {(e.type, e.data) for e in got.events}

    with contextlib.suppress(AssertionError):
        wait_for(lambda: not missing(), WAIT)
    assert missing() == set(), "sent without an error, never received"
    received = Counter((e.type, e.data) for e in got.events)
    assert max(received.values()) == 1, "an event arrived twice"
    assert [e.data for e in got.events if e.type == "flow.batched"] == list(range(10))
    assert (batched.get_stats().events_published, batched.get_stats().publish_errors) == (10, 0)
    assert len(watch.gaps_since(down_at)) == 1
    print(
        f"\nrestart: down {up_at - down_at:.2f}s; subscription resumed {resume:.2f}s after "
        f"the server; {len(raised)} unbatched publishes raised, "
        f"{sum(o is None for o in outcomes.values())} sent and received; "
        f"10 buffered sent after the outage in order"
    )


# -- 2. hung server --------------------------------------------------------------------

#: Scenario 2's pause, as in the issue.
_HANG = 10.0


@pytest.mark.slow
def test_hung_server_turns_unhealthy_publish_raises_and_recovers(
    redis_server_factory: ServerFactory,
    make_bus: BusFactory,
    prefix: str,
    link_losses: LinkLossLog,
) -> None:
    """SIGSTOP: health turns unhealthy within 3 s, publish() raises within its deadline,
    the watchdog reports the link lost; after SIGCONT all is well within 2 s, with a gap."""
    server = redis_server_factory()
    bus = make_bus(f"{server.url}?key_prefix={prefix}", "hung", publish_timeout=1.0)
    config = bus.config.redis
    assert config is not None
    watch = Watch(bus)
    got = Recorder()
    bus.subscribe("hung.*", got)
    bus.publish("hung.before")
    got.wait(1)
    assert bus.health_check().status == "healthy"

    paused_at = time.monotonic()
    server.pause()
    try:
        wait_for(
            lambda: bus.health_check().status == "unhealthy", WAIT, "an unhealthy health check"
        )
        unhealthy = _since(paused_at)
        assert unhealthy <= 3.0 + MARGIN, f"unhealthy only after {unhealthy:.2f}s"

        began = time.monotonic()
        with pytest.raises(PublishTimeoutError) as info:
            bus.publish("hung.during")
        took = _since(began)
        assert info.value.timeout == 1.0
        assert took <= 1.0 + MARGIN, f"publish took {took:.2f}s with a 1 s deadline"

        detected = link_losses.wait(since=paused_at) - paused_at
        watchdog = config.health_check_interval + config.probe_timeout
        assert detected <= watchdog + MARGIN, f"link lost after {detected:.2f}s"
        assert bus.health_check().checks["listener"].status == "unhealthy"
        time.sleep(max(0.0, _HANG - _since(paused_at)))  # the hang itself
        assert bus.health_check().status == "unhealthy"
    finally:
        server.resume()
    resumed_at = time.monotonic()

    _deliver(bus, got, "hung.after")
    wait_for(lambda: bus.health_check().status == "healthy", WAIT, "a healthy check")
    recovery = _since(resumed_at)
    assert recovery <= 2.0 + MARGIN, f"recovered {recovery:.2f}s after SIGCONT"
    watch.wait_gap(since=paused_at, timeout=0)
    print(
        f"\nhang: unhealthy after {unhealthy:.2f}s, publish raised after {took:.2f}s, "
        f"link lost reported after {detected:.2f}s; recovered {recovery:.2f}s after SIGCONT"
    )


# -- 3. CLIENT KILL TYPE pubsub --------------------------------------------------------


def test_client_kill_pubsub_reconnects_and_reports_a_gap(
    redis_server_factory: ServerFactory, make_bus: BusFactory, prefix: str
) -> None:
    """Redis cuts the listener: it is back and resubscribed within 1 s, with a gap."""
    server = redis_server_factory()
    admin = server.client()
    bus = make_bus(f"{server.url}?key_prefix={prefix}", "killed")
    watch = Watch(bus)
    got = Recorder()
    bus.subscribe("kill.*", got)
    bus.join_room("kill-room")
    bus.publish("kill.before")
    got.wait(1)

    killed_at = time.monotonic()  # before: the listener may be back before the reply is
    assert admin.client_kill_filter(_type="pubsub") >= 1
    renewed = watch.wait_gap(since=killed_at) - killed_at

    resubscribed = _deliver(bus, got, "kill.after") - killed_at
    bus.publish_to_room("kill-room", "kill.room")  # the room's channel is renewed too
    wait_for(lambda: "kill.room" in got.types, WAIT, "the room event")
    assert renewed <= 1.0 + MARGIN, f"reconnect reported {renewed:.2f}s after the kill"
    assert resubscribed <= 1.0 + MARGIN, f"delivery again {resubscribed:.2f}s after the kill"
    assert bus.get_stats().reconnects == 1
    assert bus.health_check().status == "healthy"
    print(f"\nclient kill: gap after {renewed:.2f}s, delivering again after {resubscribed:.2f}s")


# -- 4. slow handler, small output buffers ---------------------------------------------

_QUEUE = 10
_FLOOD = 1000
_PAYLOAD = "x" * 8192


def _client_list(admin: redis.Redis) -> list[dict[str, Any]]:
    return list(admin.client_list())


def _silent_subscriber(server: RedisServer, pattern: str) -> socket.socket:
    """A raw subscriber that never reads: what a listener blocked by a handler would be."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up quickly
    sock.settimeout(5.0)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"CLIENT SETNAME silent\r\nPSUBSCRIBE " + pattern.encode() + b"\r\n")
    return sock


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_slow_handler_is_never_cut_off_by_redis_and_drops_are_counted(
    redis_server_factory: ServerFactory, make_bus: BusFactory, prefix: str, overflow: str
) -> None:
    """With tiny pubsub output buffers and a stuck handler, Redis cuts a client that stops
    reading, but never the bus's listener: its queue overflows by the policy, counted."""
    # One argument per word: Redis 6.2 reads "pubsub 256kb 64kb 1" as a single one.
    limit = ("--client-output-buffer-limit", "pubsub", "256kb", "64kb", "1")
    server = redis_server_factory(limit)
    admin = server.client()
    bus = make_bus(
        f"{server.url}?key_prefix={prefix}", "flooded", queue_size=_QUEUE, overflow=overflow
    )
    watch = Watch(bus)
    started, gate = threading.Event(), threading.Event()
    handled: list[int] = []

    def slow(event: Event) -> None:
        started.set()
        gate.wait(WAIT)
        handled.append(event.data["n"])

    bus.subscribe("flood.*", slow)
    listener_ids = {c["id"] for c in _client_list(admin) if int(c["psub"]) > 0}
    assert len(listener_ids) == 1
    silent = _silent_subscriber(server, f"{prefix}*")
    try:
        wait_for(
            lambda: any(c["name"] == "silent" for c in _client_list(admin)), WAIT, "the silent one"
        )
        bus.publish("flood.n", {"n": 0})
        started.wait(WAIT)  # the handler holds event 0 from now on
        for n in range(1, _FLOOD):
            bus.publish("flood.n", {"n": n, "pad": _PAYLOAD})
        wait_for(lambda: bus.get_stats().events_received == _FLOOD, WAIT, "every event offered")
        # The limit bites: the client that stopped reading was cut off...
        wait_for(
            lambda: not any(c["name"] == "silent" for c in _client_list(admin)),
            WAIT,
            "Redis to disconnect the silent subscriber",
        )
    finally:
        silent.close()
        gate.set()
    # ... and the listener, whose handler is just as stuck, was not.
    wait_for(lambda: len(handled) == _QUEUE + 1, WAIT, "the queued events handled")
    stats = bus.get_stats()
    assert stats.events_dropped == _FLOOD - _QUEUE - 1
    assert stats.subscriptions[0].dropped == stats.events_dropped
    assert stats.reconnects == 0
    assert watch.gaps == []
    assert {c["id"] for c in _client_list(admin) if int(c["psub"]) > 0} == listener_ids
    if overflow == "drop_oldest":
        assert handled == [0, *range(_FLOOD - _QUEUE, _FLOOD)]
    else:
        assert handled == list(range(_QUEUE + 1))
    assert bus.health_check().checks["queues"].status == "degraded"
    assert "output buffer" in server.log_tail(200)


# -- 6. retried publish ----------------------------------------------------------------


def test_publish_retried_after_a_timeout_is_handled_once(
    redis_server_factory: ServerFactory, make_bus: BusFactory, prefix: str
) -> None:
    """A publish that timed out (it reached Redis all the same) is retried with its id:
    both copies arrive, the handler runs once, the copy is counted, no gap is reported."""
    server = redis_server_factory()
    url = f"{server.url}?key_prefix={prefix}"
    subscriber = make_bus(url, "retry-sub")
    watch = Watch(subscriber)
    got = Recorder()
    subscriber.subscribe("retry.*", got)
    publisher = make_bus(url, "retry-pub", publish_timeout=0.3)
    publisher.publish("retry.warm")
    got.wait(1)

    event_id = uuid.uuid4().hex
    server.pause()
    try:
        with pytest.raises(PublishTimeoutError):
            publisher.publish("retry.order", {"n": 1}, event_id=event_id)
    finally:
        server.resume()
    retried = publisher.publish("retry.order", {"n": 1}, event_id=event_id)
    assert retried.event_id == event_id
    publisher.publish("retry.marker")
    events = got.wait(3)  # warm, order, marker: the marker comes after both copies
    wait_for(lambda: subscriber.get_stats().duplicates_dropped == 1, WAIT, "the copy dropped")
    wait_for(lambda: subscriber.get_stats().events_handled == 3, WAIT, "three handled")
    assert [e.type for e in got.events] == ["retry.warm", "retry.order", "retry.marker"]
    assert events[1].id == event_id
    assert watch.gaps == []


# -- 8. connect/disconnect cycles ------------------------------------------------------

_CYCLES = 100


@pytest.mark.slow
def test_connect_disconnect_cycles_leave_no_thread_or_connection(
    redis_server_factory: ServerFactory, prefix: str
) -> None:
    """100 buses connected, used and disconnected: threads and Redis clients are back to
    what they were before (the test's own admin connection aside)."""
    server = redis_server_factory()
    admin = server.client()
    url = f"{server.url}?key_prefix={prefix}"
    baseline_ids = {c["id"] for c in _client_list(admin)}  # the admin connection itself
    baseline_threads = Counter(t.name for t in threading.enumerate())
    got = Recorder()
    for n in range(_CYCLES):
        with EventBus.from_url(url, service_name="cycler") as bus:
            bus.subscribe("cycle.*", got)
            bus.join_room("cycle-room")
            bus.publish("cycle.n", n)
            got.wait(n + 1)

    def leftover_threads() -> Counter[str]:
        return Counter(t.name for t in threading.enumerate()) - baseline_threads

    def leftover_clients() -> list[str]:
        return [
            f"{c['id']}:{c['name']}" for c in _client_list(admin) if c["id"] not in baseline_ids
        ]

    try:
        wait_for(lambda: not leftover_threads(), WAIT, "threads back to baseline")
        wait_for(lambda: not leftover_clients(), WAIT, "Redis clients back to baseline")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}: threads {dict(leftover_threads())}, clients {leftover_clients()}"
        ) from None
    assert [e.data for e in got.events] == list(range(_CYCLES))


# -- 9. network partition --------------------------------------------------------------


@pytest.fixture
def namespace() -> Iterator[NetworkNamespace]:
    """A fresh network namespace joined by a veth pair (skips where that cannot be made)."""
    reason = netns_unusable()
    if reason is not None:
        pytest.skip(f"network partition test: {reason}")
    with NetworkNamespace() as ns:
        yield ns


@pytest.fixture
def namespaced_server(namespace: NetworkNamespace) -> Iterator[NamespacedRedis]:
    """A redis-server inside ``namespace``, reachable from here over the pair only."""
    with namespace.redis_server() as server:
        yield server


@pytest.mark.slow
def test_network_partition_is_detected_and_healed(
    namespace: NetworkNamespace,
    namespaced_server: NamespacedRedis,
    make_bus: BusFactory,
    prefix: str,
    link_losses: LinkLossLog,
) -> None:
    """Every packet to and from the server dropped: the watchdog reports the link lost
    within its deadline, publish() raises within its own; after the heal the subscription
    delivers again and a gap was reported."""
    bus = make_bus(
        f"{namespaced_server.url}?key_prefix={prefix}&health_check_interval=0.5&probe_timeout=1.0",
        "partitioned",
        publish_timeout=1.0,
    )
    config = bus.config.redis
    assert config is not None
    watch = Watch(bus)
    got = Recorder()
    bus.subscribe("net.*", got)
    bus.publish("net.before")
    got.wait(1)

    namespace.partition()
    cut_at = time.monotonic()  # both DROP rules (or the link) in place
    try:
        detected = link_losses.wait(since=cut_at) - cut_at
        deadline = config.health_check_interval + config.probe_timeout
        assert detected <= deadline + MARGIN, f"link lost after {detected:.2f}s"
        health = bus.health_check()
        assert (health.status, health.checks["listener"].status) == ("unhealthy", "unhealthy")
        began = time.monotonic()
        with pytest.raises((PublishTimeoutError, TransportConnectionError)):
            bus.publish("net.during")
        took = _since(began)
        assert took <= 1.0 + MARGIN, f"publish took {took:.2f}s with a 1 s deadline"
    finally:
        namespace.heal()
    healed_at = time.monotonic()

    recovery = _deliver(bus, got, "net.after") - healed_at
    watch.wait_gap(since=cut_at, timeout=0)
    wait_for(lambda: bus.health_check().status == "healthy", WAIT, "a healthy check")
    print(
        f"\npartition ({namespace.method}): link lost reported after {detected:.2f}s "
        f"(watchdog {deadline:.1f}s), publish raised after {took:.2f}s, delivering "
        f"again {recovery:.2f}s after the heal"
    )
