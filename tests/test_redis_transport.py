"""The Redis transport against a real redis-server (docs/decisions.md, "Transports";
docs/failure-modes.md).

Delivery is awaited on a condition with a deadline, never with a sleep. Tests that
kill, pause or restart a server use ``redis_server_factory``, never the session server.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import redis

from eventbus._core.config import RedisConfig, redis_config_from_url
from eventbus._errors import (
    BusStateError,
    ConfigurationError,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
)
from eventbus._transports import create_transport
from eventbus._transports.base import LinkEvent, LinkState, Transport
from eventbus._transports.redis.transport import RedisTransport

from _servers import RedisServer

WAIT = 10.0  # generous: these machines change speed 3-5x with their load


class RecordingSink:
    """Records messages and link events; tests wait on its condition."""

    def __init__(self, *, fail_on: bytes | None = None) -> None:
        self.cond = threading.Condition()
        self.messages: list[tuple[str, str, bytes]] = []
        self.links: list[LinkEvent] = []
        self.fail_on = fail_on

    def on_message(self, key: str, channel: str, payload: bytes) -> None:
        with self.cond:
            self.messages.append((key, channel, payload))
            self.cond.notify_all()
        if payload == self.fail_on:
            raise RuntimeError("sink failure on purpose")

    def on_link(self, event: LinkEvent) -> None:
        with self.cond:
            self.links.append(event)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                pytest.fail(f"not within {timeout}s: {what}; got {self.messages!r} {self.links!r}")

    def wait_payload(self, payload: bytes) -> tuple[str, str, bytes]:
        self.wait_for(lambda: any(m[2] == payload for m in self.messages), f"payload {payload!r}")
        return next(m for m in self.messages if m[2] == payload)

    def wait_links(self, *states: LinkState, timeout: float = WAIT) -> None:
        want = list(states)
        self.wait_for(lambda: [e.state for e in self.links] == want, f"link events {want}", timeout)

    def payloads(self) -> list[bytes]:
        with self.cond:
            return [m[2] for m in self.messages]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll a server-side condition (an expiry, a closed socket) until a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.02)


@pytest.fixture
def names() -> Callable[[str], str]:
    """Unique channel/key names for one test."""
    run = uuid.uuid4().hex[:8]
    return lambda name: f"t{run}:{name}"


Factory = Callable[..., tuple[RedisTransport, RecordingSink]]


@pytest.fixture
def make_transport() -> Iterator[Factory]:
    """Start transports (``make_transport(url, **config_overrides)``); all stopped at teardown."""
    started: list[RedisTransport] = []

    def make(
        url: str, *, start: bool = True, sink: RecordingSink | None = None, **overrides: Any
    ) -> tuple[RedisTransport, RecordingSink]:
        config = attrs.evolve(redis_config_from_url(url), **overrides)
        tag = uuid.uuid4().hex[:8]
        transport = RedisTransport(
            config, client_name=f"test:{tag}", control_channel=f"test:ctl:{tag}"
        )
        started.append(transport)
        sink = sink if sink is not None else RecordingSink()
        if start:
            transport.start(sink)
        return transport, sink

    yield make
    for transport in started:
        transport.stop(5.0)


def client_names(server_client: redis.Redis) -> list[str]:
    return [c["name"] for c in server_client.client_list()]


# -- delivery -------------------------------------------------------------------------


def test_exact_channel_message_reaches_sink_with_channel_as_key(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    channel = names("room:photo:1")
    transport.subscribe([channel], timeout=5.0)
    assert transport.publish(channel, b"\x00\xffraw", timeout=2.0) == 1
    assert sink.wait_payload(b"\x00\xffraw") == (channel, channel, b"\x00\xffraw")


def test_pattern_message_reaches_sink_with_pattern_as_key(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    pattern = names("ev:photo.*")
    transport.psubscribe([pattern], timeout=5.0)
    channel = names("ev:photo.processing.completed")
    assert transport.publish(channel, b"p1", timeout=2.0) == 1
    assert sink.wait_payload(b"p1") == (pattern, channel, b"p1")
    assert transport.publish(names("ev:video.uploaded"), b"p2", timeout=2.0) == 0


def test_publish_returns_receiver_count_across_transports(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    first, _ = make_transport(redis_url)
    second, _ = make_transport(redis_url)
    channel = names("ev:a.b")
    first.subscribe([channel], timeout=5.0)
    first.psubscribe([names("ev:*")], timeout=5.0)
    second.psubscribe([names("ev:a.*")], timeout=5.0)
    assert first.publish(channel, b"x", timeout=2.0) == 3
    assert first.publish(names("nobody"), b"x", timeout=2.0) == 0


def test_subscribe_returns_only_after_the_server_confirmed(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, _ = make_transport(redis_url)
    for i in range(20):
        channel = names(f"c{i}")
        transport.subscribe([channel], timeout=5.0)
        assert redis_client.publish(channel, b"now") == 1, f"subscribe #{i} returned early"
        pattern = names(f"p{i}.*")
        transport.psubscribe([pattern], timeout=5.0)
        assert redis_client.publish(names(f"p{i}.x"), b"now") == 1, f"psubscribe #{i} early"


def test_unsubscribe_and_punsubscribe_stop_delivery(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    gone, pattern, marker = names("gone"), names("pat.*"), names("marker")
    transport.subscribe([gone, marker], timeout=5.0)
    transport.psubscribe([pattern], timeout=5.0)
    transport.unsubscribe([gone], timeout=5.0)
    transport.punsubscribe([pattern], timeout=5.0)
    assert transport.publish(gone, b"late-1", timeout=2.0) == 0
    assert transport.publish(names("pat.x"), b"late-2", timeout=2.0) == 0
    # One connection delivers in order: once the marker is in, nothing else is coming.
    transport.publish(marker, b"marker", timeout=2.0)
    sink.wait_payload(b"marker")
    assert sink.payloads() == [b"marker"]


def test_publish_many_keeps_order_and_returns_counts(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    transport.psubscribe([names("ev:*")], timeout=5.0)
    transport.subscribe([names("ev:2")], timeout=5.0)
    messages = [(names(f"ev:{i % 3}"), b"m%d" % i) for i in range(30)]
    messages.append((names("elsewhere"), b"none"))
    counts = transport.publish_many(messages, timeout=2.0)
    assert counts == [2 if i % 3 == 2 else 1 for i in range(30)] + [0]
    sink.wait_for(lambda: len(sink.messages) == 40, "40 deliveries")
    by_pattern = [m[2] for m in sink.messages if m[0] == names("ev:*")]
    assert by_pattern == [b"m%d" % i for i in range(30)]
    assert transport.publish_many([], timeout=2.0) == []


def test_a_failing_sink_is_logged_and_the_listener_goes_on(
    redis_url: str,
    make_transport: Factory,
    names: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="eventbus.transport")
    transport, sink = make_transport(redis_url, sink=RecordingSink(fail_on=b"boom"))
    channel = names("c")
    transport.subscribe([channel], timeout=5.0)
    transport.publish(channel, b"boom", timeout=2.0)
    transport.publish(channel, b"after", timeout=2.0)
    sink.wait_payload(b"after")
    assert transport.listener_alive()
    failures = [r for r in caplog.records if r.name == "eventbus.transport" and r.exc_info]
    assert failures
    assert "sink failure on purpose" in str(failures[0].exc_info[1])  # type: ignore[index]


def test_control_channel_messages_never_reach_the_sink(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    marker = names("marker")
    transport.subscribe([marker], timeout=5.0)
    assert transport.publish(transport._control, b"stray", timeout=2.0) == 1
    transport.publish(marker, b"marker", timeout=2.0)
    sink.wait_payload(b"marker")
    assert sink.payloads() == [b"marker"]


# -- failures and recovery ----------------------------------------------------------------


def test_client_kill_is_reported_and_subscriptions_are_renewed(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    channel, pattern = names("c"), names("p.*")
    transport.subscribe([channel], timeout=5.0)
    transport.psubscribe([pattern], timeout=5.0)
    assert redis_client.client_kill_filter(_type="pubsub") >= 1
    sink.wait_links(LinkState.DISCONNECTED, LinkState.RECONNECTED)
    assert sink.links[0].error is not None
    assert transport.publish(channel, b"again", timeout=2.0) == 1
    assert transport.publish(names("p.x"), b"again-p", timeout=2.0) == 1
    assert sink.wait_payload(b"again-p")[0] == pattern
    sink.wait_payload(b"again")


def test_disconnecting_the_pools_moves_publisher_listener_and_group_reads_together(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    """The seam a Sentinel switch will use: one ``disconnect()`` of the pools ends a
    blocked group read with a connection error, the listener renews its link (reported
    as a gap), and the next publish opens a fresh connection."""
    transport, sink = make_transport(redis_url)
    channel, stream = names("c"), names("{g}:s")
    transport.subscribe([channel], timeout=5.0)
    transport.groups.group_create(stream, "g", "$", timeout=2.0)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            transport.groups.group_read(stream, "g", "c", 10, block=WAIT)
        except TransportConnectionError as exc:
            failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    wait_until(
        lambda: any(c["cmd"] == "xreadgroup" for c in redis_client.client_list()),
        "the read blocking",
    )
    transport._pools.disconnect()
    reader.join(WAIT)
    assert len(failures) == 1
    sink.wait_links(LinkState.DISCONNECTED, LinkState.RECONNECTED)
    assert transport.publish(channel, b"after", timeout=2.0) == 1
    sink.wait_payload(b"after")


def test_publish_survives_killed_idle_connections_without_duplicates(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, sink = make_transport(redis_url)
    channel = names("c")
    transport.subscribe([channel], timeout=5.0)
    transport.publish(channel, b"first", timeout=2.0)
    redis_client.client_kill_filter(_type="normal", skipme=True)
    # The pool drops the dead connection before lending it; PUBLISH goes out once.
    assert transport.publish(channel, b"second", timeout=2.0) == 1
    transport.publish(channel, b"third", timeout=2.0)
    sink.wait_payload(b"third")
    assert sink.payloads() == [b"first", b"second", b"third"]


def test_server_restart_is_reported_and_pending_subscribes_wait(
    redis_server_factory: Callable[..., RedisServer],
    make_transport: Factory,
    names: Callable[[str], str],
) -> None:
    server = redis_server_factory()
    transport, sink = make_transport(server.url)
    channel, late = names("c"), names("late")
    transport.subscribe([channel], timeout=5.0)
    server.kill()
    sink.wait_links(LinkState.DISCONNECTED)
    outcome: list[BaseException | None] = []
    waiter = threading.Thread(target=lambda: outcome.append(_call(transport.subscribe, [late])))
    waiter.start()
    server.restart()
    sink.wait_links(LinkState.DISCONNECTED, LinkState.RECONNECTED)
    waiter.join(WAIT)
    assert outcome == [None]
    assert transport.publish(channel, b"back", timeout=2.0) == 1
    assert transport.publish(late, b"late", timeout=2.0) == 1
    sink.wait_payload(b"back")
    sink.wait_payload(b"late")


def _call(subscribe: Callable[[list[str], float], None], names: list[str]) -> BaseException | None:
    try:
        subscribe(names, WAIT)
    except BaseException as exc:
        return exc
    return None


def test_publish_to_a_stopped_server_raises_connection_error(
    redis_server_factory: Callable[..., RedisServer], make_transport: Factory
) -> None:
    server = redis_server_factory()
    transport, _ = make_transport(server.url, start=False)
    assert transport.publish("c", b"x", timeout=1.0) == 0
    server.stop()
    with pytest.raises(TransportConnectionError) as info:
        transport.publish("c", b"x", timeout=1.0)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(TransportConnectionError):
        transport.publish_many([("c", b"x")], timeout=1.0)
    with pytest.raises(TransportConnectionError):
        transport.ping(timeout=1.0)


def test_start_against_no_server_raises_connection_error(
    redis_server_factory: Callable[..., RedisServer], make_transport: Factory
) -> None:
    server = redis_server_factory()
    server.stop()
    transport, sink = make_transport(server.url, start=False)
    with pytest.raises(TransportConnectionError):
        transport.start(sink)
    assert not transport.listener_alive()


def test_publish_to_a_paused_server_times_out_within_its_deadline(
    redis_server_factory: Callable[..., RedisServer], make_transport: Factory
) -> None:
    server = redis_server_factory()
    transport, _ = make_transport(server.url, start=False)
    transport.publish("c", b"warm", timeout=0.5)  # a pooled connection exists
    server.pause()
    try:
        # Twice: over the pooled connection, then over a new one (handshake included).
        for _ in range(2):
            began = time.monotonic()
            with pytest.raises(PublishTimeoutError) as info:
                transport.publish("c", b"x", timeout=0.5)
            assert time.monotonic() - began < 2.0
            assert info.value.timeout == 0.5
            assert isinstance(info.value.__cause__, redis.TimeoutError)
        with pytest.raises(PublishTimeoutError):
            transport.publish_many([("c", b"x"), ("d", b"y")], timeout=0.5)
    finally:
        server.resume()
    assert transport.publish("c", b"x", timeout=0.5) == 0


def test_a_hung_server_is_detected_by_the_listener_probe(
    redis_server_factory: Callable[..., RedisServer],
    make_transport: Factory,
    names: Callable[[str], str],
) -> None:
    server = redis_server_factory()
    transport, sink = make_transport(server.url, health_check_interval=0.2, socket_timeout=0.5)
    channel = names("c")
    transport.subscribe([channel], timeout=5.0)
    server.pause()
    try:
        sink.wait_links(LinkState.DISCONNECTED)
        assert "PING" in sink.links[0].reason
        with pytest.raises(TransportError, match="not confirmed"):
            transport.subscribe([names("while-hung")], timeout=0.3)
    finally:
        server.resume()
    sink.wait_links(LinkState.DISCONNECTED, LinkState.RECONNECTED)
    assert transport.publish(channel, b"back", timeout=2.0) == 1
    sink.wait_payload(b"back")


def test_a_lost_subscription_is_detected_by_the_heartbeat_round_trip(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    """With PING still answered but the control channel no longer subscribed, the heartbeat
    does not come back: the link is renewed (control channel included) and delivery goes on."""
    transport, sink = make_transport(redis_url, health_check_interval=0.1, probe_timeout=0.3)
    channel = names("c")
    transport.subscribe([channel], timeout=5.0)
    transport.unsubscribe([transport._control], timeout=5.0)  # what a silent loss looks like
    sink.wait_links(LinkState.DISCONNECTED, LinkState.RECONNECTED)
    assert "heartbeat" in sink.links[0].reason
    assert transport.link_up()
    assert transport.publish(channel, b"after", timeout=2.0) == 1
    sink.wait_payload(b"after")


def test_the_listener_probe_raises_no_false_alarm(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory
) -> None:
    def pings() -> int:
        stats = redis_client.info("commandstats").get("cmdstat_ping", {})
        return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0

    before = pings()
    transport, sink = make_transport(redis_url, health_check_interval=0.05, socket_timeout=1.0)
    wait_until(lambda: pings() >= before + 5, "five listener probes")
    assert transport.listener_alive()
    assert sink.links == []


# -- presence and the client registry ---------------------------------------------------------


def test_presence_set_members_remove(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    presence = make_transport(redis_url, start=False)[0].presence
    zset, hkey = names("presence:{r}:z"), names("presence:{r}:h")
    for member in ("user-b", "user-a", "svc:host:1:0"):
        presence.presence_set(zset, hkey, member, b'{"m":1}', ttl=30.0, timeout=2.0)
    presence.presence_set(zset, hkey, "user-a", b'{"m":2}', ttl=30.0, timeout=2.0)
    assert presence.presence_members(zset, hkey, timeout=2.0) == [
        "svc:host:1:0",
        "user-a",
        "user-b",
    ]
    assert redis_client.hget(hkey, "user-a") == b'{"m":2}'
    server_ms = redis_client.time()[0] * 1000
    score = redis_client.zscore(zset, "user-a")
    assert score is not None
    assert server_ms + 25_000 < score <= server_ms + 31_000  # expiry from the server clock
    for key in (zset, hkey):  # an abandoned room disappears a little after its ttl
        assert 30_000 < redis_client.pttl(key) <= 34_000
    presence.presence_remove(zset, hkey, "user-a", timeout=2.0)
    assert presence.presence_members(zset, hkey, timeout=2.0) == ["svc:host:1:0", "user-b"]
    assert redis_client.hexists(hkey, "user-a") is False


def test_presence_prunes_expired_members_from_both_keys(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    presence = make_transport(redis_url, start=False)[0].presence
    zset, hkey = names("presence:{r}:z"), names("presence:{r}:h")
    presence.presence_set(zset, hkey, "long", b"{}", ttl=60.0, timeout=2.0)
    presence.presence_set(zset, hkey, "short", b"{}", ttl=0.05, timeout=2.0)
    # A short member never shortens the keys' lifetime below the long one's.
    assert redis_client.pttl(zset) > 59_000
    wait_until(
        lambda: presence.presence_members(zset, hkey, timeout=2.0) == ["long"], "short expired"
    )
    assert redis_client.hkeys(hkey) == [b"long"]
    assert redis_client.zrange(zset, 0, -1) == [b"long"]


def test_client_registry_set_list_remove(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    presence = make_transport(redis_url, start=False)[0].presence
    zset, hkey = names("{clients}:z"), names("{clients}:h")
    presence.client_set(zset, hkey, "api:h:2:0", b'{"n":2}', ttl=30.0, timeout=2.0)
    presence.client_set(zset, hkey, "api:h:1:0", b'{"n":1}', ttl=30.0, timeout=2.0)
    presence.client_set(zset, hkey, "gone:h:3:0", b"{}", ttl=0.05, timeout=2.0)
    now = float(redis_client.time()[0])
    wait_until(lambda: len(presence.client_list(zset, hkey, timeout=2.0)) == 2, "gone expired")
    records = presence.client_list(zset, hkey, timeout=2.0)
    assert [(r.client_id, r.info) for r in records] == [
        ("api:h:1:0", b'{"n":1}'),
        ("api:h:2:0", b'{"n":2}'),
    ]
    assert all(now + 25 < r.expires_at < now + 32 for r in records)
    assert redis_client.hkeys(hkey) == [b"api:h:2:0", b"api:h:1:0"]
    presence.client_remove(zset, hkey, "api:h:1:0", timeout=2.0)
    assert [r.client_id for r in presence.client_list(zset, hkey, timeout=2.0)] == ["api:h:2:0"]


# -- lifecycle and connections ----------------------------------------------------------------


def test_every_connection_carries_the_client_name(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, _ = make_transport(redis_url)
    transport.subscribe([names("c")], timeout=5.0)
    transport.publish(names("c"), b"x", timeout=2.0)
    transport.presence.presence_members(names("{r}:z"), names("{r}:h"), timeout=3.0)
    ours = [c for c in redis_client.client_list() if c["name"] == transport._client_name]
    assert len(ours) >= 3  # the listener, and one command pool per deadline
    assert any(int(c["psub"]) + int(c["sub"]) > 0 for c in ours)


def test_stop_leaves_no_thread_and_no_connection(
    redis_url: str, redis_client: redis.Redis, make_transport: Factory, names: Callable[[str], str]
) -> None:
    transport, _ = make_transport(redis_url)
    transport.subscribe([names("c")], timeout=5.0)
    transport.publish(names("c"), b"x", timeout=2.0)
    transport.presence.presence_set(
        names("{r}:z"), names("{r}:h"), "m", b"{}", ttl=5.0, timeout=2.0
    )
    assert transport._client_name in client_names(redis_client)
    began = time.monotonic()
    transport.stop(timeout=5.0)
    assert time.monotonic() - began < 2.0  # woken, not waiting for its poll
    assert not transport.listener_alive()
    assert not [t for t in threading.enumerate() if t is transport._listener.thread]
    wait_until(lambda: transport._client_name not in client_names(redis_client), "sockets closed")
    transport.stop(timeout=5.0)  # idempotent
    with pytest.raises(BusStateError):
        transport.subscribe([names("c")], timeout=1.0)
    with pytest.raises(BusStateError):
        transport.publish(names("c"), b"x", timeout=2.0)
    assert transport._client_name not in client_names(redis_client)


def test_start_twice_and_subscribe_before_start_are_misuse(
    redis_url: str, make_transport: Factory
) -> None:
    transport, sink = make_transport(redis_url, start=False)
    with pytest.raises(BusStateError):
        transport.subscribe(["c"], timeout=1.0)
    transport.start(sink)
    with pytest.raises(BusStateError):
        transport.start(sink)


def test_ping_returns_latency(redis_url: str, make_transport: Factory) -> None:
    transport, _ = make_transport(redis_url, start=False)
    latency = transport.ping(timeout=2.0)
    assert 0.0 < latency < 2.0


def test_a_deadline_must_be_positive(redis_url: str, make_transport: Factory) -> None:
    transport, _ = make_transport(redis_url, start=False)
    with pytest.raises(ValueError, match="timeout"):
        transport.publish("c", b"x", timeout=0)


def test_client_names_are_made_acceptable_to_redis(
    redis_url: str, redis_client: redis.Redis
) -> None:
    config = redis_config_from_url(redis_url)
    transport = RedisTransport(config, client_name="my svc:h\n:1:0", control_channel="ctl")
    try:
        assert transport.publish("c", b"x", timeout=2.0) == 0
        assert "my_svc:h_:1:0" in client_names(redis_client)
    finally:
        transport.stop(1.0)


def test_redis_transport_satisfies_the_protocol(redis_url: str, make_transport: Factory) -> None:
    transport, _ = make_transport(redis_url, start=False)
    assert isinstance(transport, Transport)
    assert transport.name == "redis"


# -- create_transport -------------------------------------------------------------------------


def test_create_transport_picks_redis_for_redis_schemes() -> None:
    for url in ("redis://localhost:1/0", "rediss://localhost:1/0", "unix:///tmp/r.sock"):
        transport = create_transport(url, redis=None, client_name="c", control_channel="ctl")
        assert isinstance(transport, RedisTransport)
        transport.stop(1.0)


def test_create_transport_prefers_a_given_config_and_accepts_no_url() -> None:
    config = RedisConfig(port=7777, socket_timeout=1.5)
    transport = create_transport(None, redis=config, client_name="c", control_channel="ctl")
    assert isinstance(transport, RedisTransport)
    assert transport._config is config
    transport.stop(1.0)
    with pytest.raises(ConfigurationError):
        create_transport(None, redis=None, client_name="c", control_channel="ctl")


def test_create_transport_picks_memory() -> None:
    transport = create_transport(
        f"memory://{uuid.uuid4().hex}", redis=None, client_name="c", control_channel="ctl"
    )
    assert transport.name != "redis"
    assert isinstance(transport, Transport)


@pytest.mark.parametrize("url", ["redis+sentinel://h1:26379/m/0", "redis+cluster://h1:7000"])
def test_create_transport_names_planned_schemes_not_supported_yet(url: str) -> None:
    with pytest.raises(ConfigurationError, match="not supported yet"):
        create_transport(url, redis=None, client_name="c", control_channel="ctl")


def test_create_transport_needs_a_token_for_the_gateway() -> None:
    with pytest.raises(ConfigurationError, match="service token"):
        create_transport("https://gw:3003", redis=None, client_name="c", control_channel="ctl")


def test_create_transport_rejects_unknown_schemes_naming_the_supported() -> None:
    with pytest.raises(ConfigurationError, match=r"memory://, redis://, rediss://, unix://"):
        create_transport("amqp://user:pw@h/", redis=None, client_name="c", control_channel="c")


def test_choosing_a_transport_does_not_import_redis() -> None:
    code = (
        "import sys\n"
        "from eventbus._transports import create_transport\n"
        "create_transport('memory://x', redis=None, client_name='c', control_channel='c')\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_subscribe_the_acl_refuses_fails_at_once_and_leaves_the_link_alone(
    redis_client: redis.Redis, redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    """A (P)SUBSCRIBE that an ACL refuses (NOPERM) is a TransportError within a second
    that names the pattern and Redis's reason; the listener keeps its link (no gap
    reported) and the subscriptions it has go on receiving."""
    user, password = f"limited-{uuid.uuid4().hex[:8]}", "limited-password-0123456789"
    allowed, refused = names("allowed"), names("refused")
    redis_client.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["test:ctl:*", f"{allowed}*"],
        commands=["+@all"],
        reset_channels=True,
    )
    try:
        transport, sink = make_transport(redis_url, username=user, password=password)
        transport.subscribe([allowed], timeout=5.0)
        started = time.monotonic()
        with pytest.raises(TransportError, match="refused by Redis") as caught:
            transport.psubscribe([f"{refused}:*"], timeout=5.0)
        assert time.monotonic() - started < 1.0
        assert f"{refused}:*" in str(caught.value)
        assert "NOPERM" in str(caught.value) or "permission" in str(caught.value).lower()
        with pytest.raises(TransportError, match="refused by Redis"):
            transport.subscribe([refused], timeout=5.0)
        transport.publish(allowed, b"still here", timeout=2.0)
        sink.wait_payload(b"still here")
        assert transport.link_up()
        assert sink.links == []  # no DISCONNECTED, no RECONNECTED: no gap
        transport.subscribe([f"{allowed}:more"], timeout=5.0)  # the link still works
    finally:
        redis_client.acl_deluser(user)


def test_confirmed_subscriptions_are_not_remembered_by_the_listener(
    redis_url: str, make_transport: Factory, names: Callable[[str], str]
) -> None:
    """What the listener keeps to attribute a refusal stays as short as the requests in
    flight: a long-lived bus that joins and leaves rooms does not grow it."""
    transport, _ = make_transport(redis_url)
    for n in range(50):
        transport.subscribe([names(f"room-{n}")], timeout=5.0)
        transport.unsubscribe([names(f"room-{n}")], timeout=5.0)
    transport.subscribe([names("last")], timeout=5.0)
    assert len(transport._listener._unconfirmed) <= 1
