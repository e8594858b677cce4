"""Service clients: a Python bus over ``http://`` through a real gateway process and Redis.

Every test runs ``eventbus gateway`` (tests/_gateway.py) against the test Redis and
puts a bus with a service token on one side, a plain Redis bus on the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from _gateway import GatewayProcess, start_gateway, wait_for
from eventbus import (
    BusStateError,
    Event,
    EventBus,
    Gap,
    GatewayAuthError,
    GatewayRefusedError,
    TransportConnectionError,
    TransportError,
)

pytestmark = pytest.mark.timeout(60)

SCOPES = ["publish:photo.*", "subscribe:photo.*", "rooms:photo:*", "presence"]


class Inbox:
    """Events received by a handler, waitable."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def types(self) -> list[str]:
        with self._lock:
            return [e.type for e in self.events]

    def wait_for_type(self, event_type: str, timeout: float = 10.0) -> Event:
        def find() -> Event | None:
            with self._lock:
                return next((e for e in self.events if e.type == event_type), None)

        found: Event = wait_for(find, timeout)
        return found


@pytest.fixture
def gateway(redis_url: str) -> Iterator[GatewayProcess]:
    gw = start_gateway(redis_url)
    try:
        yield gw
    finally:
        gw.stop()


def service_bus(gw: GatewayProcess, *, scopes: list[str] = SCOPES, **options: Any) -> EventBus:
    token = gw.token("thumbnailer", service="thumbnailer", scopes=scopes)
    options.setdefault("heartbeat_interval", 0.5)
    options.setdefault("presence_ttl", 3.0)
    return EventBus.from_url(gw.url, service_name="thumbnailer", token=token, **options)


def test_events_cross_between_a_gateway_bus_and_a_redis_bus(
    gateway: GatewayProcess, redis_url: str
) -> None:
    """A service bus over http:// publishes to a Redis bus, and subscribes (a pattern)
    to events a Redis bus publishes; the transport is the gateway's."""
    on_redis, on_service = Inbox(), Inbox()
    with EventBus.from_url(redis_url, service_name="api") as redis_bus:
        redis_bus.subscribe("photo.*", on_redis)
        with service_bus(gateway) as bus:
            assert bus.config.transport_url == gateway.url
            bus.subscribe("photo.*", on_service)
            result = bus.publish("photo.uploaded", {"id": 1})
            assert result.receivers is not None
            assert result.receivers >= 2
            assert on_redis.wait_for_type("photo.uploaded").data == {"id": 1}
            assert on_redis.events[0].source == "thumbnailer"
            redis_bus.publish("photo.processed", {"id": 2})
            assert on_service.wait_for_type("photo.processed").data == {"id": 2}
            # Exact order, no duplicates: 20 events in a row arrive in sequence.
            for i in range(20):
                redis_bus.publish("photo.step", {"i": i})
            wait_for(lambda: on_service.types().count("photo.step") == 20)
            steps = [e.data["i"] for e in on_service.events if e.type == "photo.step"]
            assert steps == list(range(20))
            assert bus.health_check().status == "healthy"


def test_batched_publishes_go_through_the_gateway(gateway: GatewayProcess, redis_url: str) -> None:
    """With batching on, the bus sends publish_many requests; all arrive in order."""
    from eventbus import PerformanceConfig

    inbox = Inbox()
    with EventBus.from_url(redis_url, service_name="api") as redis_bus:
        redis_bus.subscribe("photo.batch", inbox)
        with service_bus(gateway, performance=PerformanceConfig(batch_size=8)) as bus:
            for i in range(30):
                bus.publish("photo.batch", {"i": i})
            assert bus.flush(10.0)
            wait_for(lambda: len(inbox.events) == 30)
            assert [e.data["i"] for e in inbox.events] == list(range(30))


def test_rooms_and_members_work_through_the_gateway(
    gateway: GatewayProcess, redis_url: str
) -> None:
    """join_room over the gateway: the room's events arrive, and get_room_members on a
    Redis bus (and on the service bus) lists the service bus; leaving removes it."""
    inbox = Inbox()
    with EventBus.from_url(redis_url, service_name="api") as redis_bus, service_bus(gateway) as bus:
        bus.subscribe("photo.*", inbox)
        bus.join_room("photo:42")
        assert redis_bus.get_room_members("photo:42") == [bus.client_id]
        assert bus.get_room_members("photo:42") == [bus.client_id]
        redis_bus.publish_to_room("photo:42", "photo.commented", {"text": "hi"})
        assert inbox.wait_for_type("photo.commented").data == {"text": "hi"}
        bus.publish_to_room("photo:42", "photo.liked", {"by": "svc"})
        assert inbox.wait_for_type("photo.liked").data == {"by": "svc"}
        bus.leave_room("photo:42")
        assert redis_bus.get_room_members("photo:42") == []
        assert any(c.client_id == bus.client_id for c in redis_bus.get_clients())


def test_requests_outside_the_token_scopes_are_refused_with_a_typed_error(
    gateway: GatewayProcess,
) -> None:
    """Publishing a type, subscribing a pattern, joining a room, broadcasting outside the
    scopes: each is refused by the gateway with GatewayRefusedError("forbidden")."""
    with service_bus(gateway) as bus:
        with pytest.raises(GatewayRefusedError) as refused:
            bus.publish("video.uploaded", {})
        assert refused.value.code == "forbidden"
        assert isinstance(refused.value, TransportError)
        with pytest.raises(GatewayRefusedError, match="forbidden"):
            bus.subscribe("*", lambda e: None)  # wider than subscribe:photo.*
        with pytest.raises(GatewayRefusedError, match="forbidden"):
            bus.subscribe("video.*", lambda e: None)
        with pytest.raises(GatewayRefusedError, match="forbidden"):
            bus.join_room("video:1")
        with pytest.raises(GatewayRefusedError, match="forbidden"):
            bus.broadcast("photo.announcement", {})
        with pytest.raises(GatewayRefusedError, match="forbidden"):
            bus.publish_to_user("alice", "photo.ready", {})
        # ... and the bus still works within its scopes.
        assert bus.publish("photo.ok", {}).receivers is not None
        assert bus.get_stats().publish_errors == 3


def test_presence_needs_its_scope(gateway: GatewayProcess) -> None:
    """Without the ``presence`` scope a bus cannot list room members."""
    bus = service_bus(gateway, scopes=["publish:photo.*"])
    with bus, pytest.raises(GatewayRefusedError, match="forbidden"):
        bus.get_room_members("photo:1")


def test_durable_groups_are_refused_on_a_gateway_bus(gateway: GatewayProcess) -> None:
    """A group subscription is a BusStateError: groups need Redis Streams."""
    with service_bus(gateway) as bus, pytest.raises(BusStateError, match="durable groups"):
        bus.subscribe("photo.*", lambda e: None, group="thumbs")


def test_bad_and_expired_tokens_are_refused_with_their_code(gateway: GatewayProcess) -> None:
    """connect() raises GatewayAuthError (a TransportConnectionError) with the code."""
    cases = {
        "unauthorized": "not-a-jwt",
        "token_expired": gateway.token("svc", service="svc", scopes=SCOPES, ttl=-10),
    }
    for code, token in cases.items():
        bus = EventBus.from_url(gateway.url, service_name="svc", token=token)
        with pytest.raises(GatewayAuthError) as refused:
            bus.connect()
        assert refused.value.code == code
        assert isinstance(refused.value, TransportConnectionError)
        assert not bus.is_connected()
    # A user token (no scopes, no service) is not a service token.
    user = EventBus.from_url(gateway.url, service_name="svc", token=gateway.token("alice"))
    with pytest.raises(GatewayAuthError, match="unauthorized"):
        user.connect()


def test_a_gateway_restart_reconnects_with_backoff_and_reports_a_gap(
    redis_url: str,
) -> None:
    """Stopping the gateway drops the link (publishes fail fast with a typed error);
    a new gateway on the same port takes the bus back: subscriptions renewed, a gap
    reported, events flow again."""
    first = start_gateway(redis_url)
    port = urlsplit(first.url).port
    gaps: list[Gap] = []
    inbox = Inbox()
    second: GatewayProcess | None = None
    try:
        with (
            EventBus.from_url(redis_url, service_name="api") as redis_bus,
            service_bus(first, publish_timeout=1.0, operation_timeout=1.0) as bus,
        ):
            bus.on_gap(gaps.append)
            bus.subscribe("photo.*", inbox)
            first.stop()
            wait_for(lambda: bus.health_check().status != "healthy")
            with pytest.raises(TransportConnectionError):
                bus.publish("photo.lost", {})
            started = time.monotonic()
            second = start_gateway(redis_url, args=["--port", str(port)])
            wait_for(lambda: gaps, timeout=20)
            assert gaps[0].reason == "reconnect"
            assert time.monotonic() - started < 20
            redis_bus.publish("photo.after", {"n": 1})
            assert inbox.wait_for_type("photo.after").data == {"n": 1}
            assert bus.publish("photo.back", {}).receivers is not None
            assert bus.get_stats().reconnects == 1
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_the_gateway_losing_redis_is_reported_as_a_gap(redis_server_factory: Any) -> None:
    """When the gateway's own Redis subscription drops, the service bus hears of it
    (link down, then up): a gap is reported and delivery resumes."""
    server = redis_server_factory()
    gw = start_gateway(server.url)
    gaps: list[Gap] = []
    inbox = Inbox()
    try:
        with service_bus(gw) as bus:
            bus.on_gap(gaps.append)
            bus.subscribe("photo.*", inbox)
            server.restart()
            wait_for(lambda: gaps, timeout=20)
            with EventBus.from_url(server.url, service_name="api") as redis_bus:

                def delivered() -> bool:
                    redis_bus.publish("photo.again", {})
                    return "photo.again" in inbox.types()

                wait_for(delivered, timeout=15, interval=0.2)
    finally:
        gw.stop()
