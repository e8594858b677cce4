"""The gateway with real processes: ``eventbus gateway`` against the test Redis, reached by
python-socketio clients over WebSocket, fed by Python buses on the same Redis.

Pure parts (tokens, config, room policy, limits) are tested in-process first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import socketio
import websockets.sync.client

from _gateway import (
    TEST_KEYS,
    GatewayProcess,
    gateway_token,
    keys_text,
    start_gateway,
    wait_for,
)
from eventbus import ConfigurationError, EventBus
from eventbus.gateway import (
    AuthError,
    Claims,
    GatewayConfig,
    TokenVerifier,
    mint_token,
    parse_keys,
)
from eventbus.gateway._limits import ConnectRateLimiter, payload_size
from eventbus.gateway._rooms import RoomRequestError, decide, parse_room_request

SECRET = TEST_KEYS["test-1"]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def gateway(redis_url: str) -> Iterator[GatewayProcess]:
    """A real gateway process on a free port against the test Redis."""
    gw = start_gateway(redis_url)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gateways(redis_url: str) -> Iterator[Callable[..., GatewayProcess]]:
    """A factory of gateway processes (``start_gateway`` options), all stopped at teardown.

    Request it before ``browsers``, so that clients close before their gateways stop.
    """
    started: list[GatewayProcess] = []

    def start(**options: Any) -> GatewayProcess:
        gw = start_gateway(redis_url, **options)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def bus(redis_url: str) -> Iterator[EventBus]:
    """A connected Python bus on the gateway's Redis."""
    with EventBus.from_url(redis_url, service_name="gateway-test") as b:
        yield b


class Browser:
    """A python-socketio client that records every event it receives."""

    def __init__(self) -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.errors: list[Any] = []
        self.disconnected = threading.Event()
        self.client.on("*", lambda event, data=None: self.events.append((event, data)))
        self.client.on("connect_error", self.errors.append)
        self.client.on("disconnect", lambda reason=None: self.disconnected.set())
        # "error" is also caught by "*", but give it its own list for clarity.
        self.server_errors: list[Any] = []
        self.client.on("error", self.server_errors.append)

    def connect(self, url: str, token: object) -> None:
        """Connect over WebSocket with ``auth={"token": token}``."""
        self.client.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=10)

    def call(self, event: str, data: Any = None) -> Any:
        """Emit ``event`` and return the server's acknowledgement."""
        return self.client.call(event, data, timeout=10)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        """The envelopes received as Socket.IO event ``event_type``."""
        return [data for event, data in list(self.events) if event == event_type]

    def close(self) -> None:
        """Disconnect if still connected, and close the WebSocket in any case."""
        if self.client.connected:
            self.client.disconnect()
        # python-engineio's client leaves its socket open when the server closed the
        # connection (a CLOSE packet): shut it here, or it leaks (ResourceWarning).
        ws = getattr(self.client.eio, "ws", None)
        if ws is not None:
            ws.shutdown()


@pytest.fixture
def browsers() -> Iterator[Callable[[], Browser]]:
    """A factory of :class:`Browser` clients, all disconnected at teardown."""
    made: list[Browser] = []

    def make() -> Browser:
        b = Browser()
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def connected(make: Callable[[], Browser], gw: GatewayProcess, user: str, **kw: Any) -> Browser:
    """A browser connected to ``gw`` as ``user`` (token options in ``kw``)."""
    b = make()
    b.connect(gw.url, gw.token(user, **kw))
    return b


def refusal(make: Callable[[], Browser], url: str, token: object) -> str:
    """Connect with ``token``, expect a refusal, return its code (connect_error message)."""
    b = make()
    with pytest.raises(socketio.exceptions.ConnectionError):
        b.connect(url, token)
    assert len(b.errors) == 1, b.errors
    error = b.errors[0]
    assert error["data"]["code"] == error["message"]
    return str(error["message"])


def gateway_stats(bus: EventBus, gw: GatewayProcess) -> dict[str, Any]:
    """The gateway node's counters from its client record (refreshed every 0.5 s)."""
    for client in bus.get_clients():
        if client.client_id == gw.node_id:
            return dict(client.stats)
    return {}


def wait_stat(bus: EventBus, gw: GatewayProcess, name: str, at_least: int) -> dict[str, Any]:
    """Wait until the gateway's counter ``name`` reaches ``at_least``; return the stats."""
    result: dict[str, Any] = wait_for(
        lambda: (s := gateway_stats(bus, gw)).get(name, 0) >= at_least and s
    )
    return result


# -- tokens, config, rooms, limits: pure ------------------------------------------------------


def test_a_minted_token_verifies_with_its_kid_and_carries_its_claims() -> None:
    """Rotation: each configured kid verifies its own tokens; claims come back typed."""
    verifier = TokenVerifier(TEST_KEYS, audience="eventbus")
    for kid in TEST_KEYS:
        token = gateway_token("user-1", rooms=["photo:*"], kid=kid)
        claims = verifier.verify(token)
        assert (claims.sub, claims.rooms, claims.service) == ("user-1", ("photo:*",), None)
        assert claims.may_join("photo:123")
        assert not claims.may_join("video:1")
    service = mint_token(
        kid="test-2",
        secret=TEST_KEYS["test-2"],
        sub="thumbs",
        service="thumbs",
        scopes=["publish:photo.*"],
    )
    claims = verifier.verify(service)
    assert (claims.service, claims.scopes) == ("thumbs", ("publish:photo.*",))


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda: gateway_token("u", keys={"test-1": "x" * 40}), "unauthorized"),  # bad signature
        (lambda: gateway_token("u", kid="old", keys={"old": SECRET}), "unauthorized"),  # kid
        (
            lambda: mint_token(kid="test-1", secret=SECRET, sub="u", audience="other"),
            "unauthorized",
        ),
        (lambda: gateway_token("u", ttl=-10), "token_expired"),
        (lambda: "not-a-jwt", "unauthorized"),
        (lambda: None, "unauthorized"),
        (lambda: 42, "unauthorized"),
        (lambda: "x" * 10_000, "unauthorized"),
    ],
)
def test_bad_tokens_are_refused_with_their_code(make: Callable[[], object], code: str) -> None:
    """Wrong key, unknown kid, wrong audience, expiry, garbage: AuthError with the code."""
    with pytest.raises(AuthError) as info:
        TokenVerifier(TEST_KEYS).verify(make())
    assert info.value.code == code


def test_a_token_without_a_required_claim_or_kid_is_refused() -> None:
    """exp, sub and aud are required; no kid is accepted only with exactly one key."""
    import jwt

    no_exp = jwt.encode({"sub": "u", "aud": "eventbus"}, SECRET, headers={"kid": "test-1"})
    bad_sub = jwt.encode(
        {"sub": "a b", "aud": "eventbus", "exp": time.time() + 60},
        SECRET,
        headers={"kid": "test-1"},
    )
    no_kid = jwt.encode({"sub": "u", "aud": "eventbus", "exp": time.time() + 60}, SECRET)
    for token in (no_exp, bad_sub, no_kid):
        with pytest.raises(AuthError) as info:
            TokenVerifier(TEST_KEYS).verify(token)
        assert info.value.code == "unauthorized"
    assert TokenVerifier({"only": SECRET}).verify(no_kid).sub == "u"


def test_gateway_config_rejects_bad_values_before_any_io() -> None:
    """Short secrets, no keys, bad origins, heartbeat >= ttl, bad URL: ConfigurationError."""
    good = {"keys": TEST_KEYS}
    for bad in (
        {"keys": {}},
        {"keys": {"k": "short"}},
        {"keys": "k-without-secret"},
        {**good, "origins": ["localhost:3000"]},
        {**good, "heartbeat_interval": 20.0},
        {**good, "redis_url": "http://x"},
        {**good, "port": 70000},
        {**good, "max_payload": 0},
        {**good, "connect_rate": -1},
        {**good, "authorize": "yes"},
    ):
        with pytest.raises(ConfigurationError):
            GatewayConfig(**bad)
    config = GatewayConfig(
        keys=keys_text(TEST_KEYS),
        origins="https://a.example, http://b:3000",
        redis_url="redis://h:6390/2?key_prefix=app:",
    )
    assert config.keys == TEST_KEYS
    assert config.prefix == "app:"
    assert config.cors_allowed_origins == ["https://a.example", "http://b:3000"]
    assert parse_keys("a:b:c, d:e") == {"a": "b:c", "d": "e"}


def test_room_requests_are_parsed_strictly() -> None:
    """{"room": R} or R; anything else malformed; bad names invalid_room."""
    assert parse_room_request({"room": "photo:1"}) == parse_room_request("photo:1") == "photo:1"
    for data, code in [
        (None, "malformed"),
        (1, "malformed"),
        ([], "malformed"),
        ({"room": 1}, "malformed"),
        ({"room": "a", "x": 1}, "malformed"),
        ({}, "malformed"),
        ("a b", "invalid_room"),
        ("", "invalid_room"),
        ("photo:*", "invalid_room"),
    ]:
        with pytest.raises(RoomRequestError) as info:
            parse_room_request(data)
        assert info.value.code == code, data


def test_room_policy_denies_by_default_and_never_grants_another_users_room() -> None:
    """Own user room yes; others' user rooms no even with user:*; else patterns or policy."""
    claims = Claims(sub="alice", exp=time.time() + 60, rooms=("photo:*", "user:*"))

    async def check() -> list[bool]:
        async def policy(c: Claims, room: str) -> bool:
            return room == "team:eng"

        return [
            await decide(claims, "user:alice", None),
            await decide(claims, "user:bob", None),
            await decide(claims, "photo:1", None),
            await decide(claims, "video:1", None),
            await decide(claims, "team:eng", policy),
            await decide(claims, "photo:1", policy),  # a policy replaces the patterns
            await decide(claims, "user:bob", lambda c, r: True),
        ]

    assert asyncio.run(check()) == [True, False, True, False, True, False, False]


def test_connect_rate_is_a_token_bucket_per_ip() -> None:
    """burst connections at once, then rate per second; other IPs unaffected; 0 = off."""
    now = [0.0]
    limiter = ConnectRateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    now[0] += 0.5
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert all(ConnectRateLimiter(rate=0, burst=1).allow("a") for _ in range(100))
    assert payload_size({"room": "é"}) == len('{"room":"é"}'.encode())


# -- the gateway process ---------------------------------------------------------------------


def test_a_user_gets_its_own_user_events_and_not_others(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """publish_to_user reaches the user's socket as an event named by the type, with the
    envelope; another user's socket gets nothing of it."""
    alice = connected(browsers, gateway, "alice")
    bob = connected(browsers, gateway, "bob")
    result = bus.publish_to_user("alice", "notification.new", {"text": "hi"})
    bus.publish_to_user("bob", "marker.done", {})
    wait_for(lambda: alice.of_type("notification.new") and bob.of_type("marker.done"))
    (envelope,) = alice.of_type("notification.new")
    assert envelope["id"] == result.event_id
    assert envelope["type"] == "notification.new"
    assert envelope["data"] == {"text": "hi"}
    assert envelope["specversion"] == "1.0"
    assert envelope["source"] == "gateway-test"
    assert bob.of_type("notification.new") == []
    assert alice.of_type("marker.done") == []


def test_joining_an_allowed_room_receives_its_events_until_leaving(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """join acks {ok: true}; room events arrive; after leave they stop."""
    alice = connected(browsers, gateway, "alice", rooms=["photo:*"])
    assert alice.call("join", {"room": "photo:123"}) == {"ok": True}
    assert alice.call("join", "photo:123") == {"ok": True}  # idempotent, bare string
    bus.publish_to_room("photo:123", "processing.update", {"progress": 50})
    bus.publish_to_room("photo:999", "processing.update", {"progress": 1})
    bus.publish_to_user("alice", "marker.one", {})
    wait_for(lambda: alice.of_type("marker.one"))
    assert [e["data"] for e in alice.of_type("processing.update")] == [{"progress": 50}]
    assert alice.call("leave", {"room": "photo:123"}) == {"ok": True}
    bus.publish_to_room("photo:123", "processing.update", {"progress": 99})
    bus.publish_to_user("alice", "marker.two", {})
    wait_for(lambda: alice.of_type("marker.two"))
    assert [e["data"] for e in alice.of_type("processing.update")] == [{"progress": 50}]


def test_unauthorized_and_malformed_joins_are_refused_and_counted(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """Rooms outside the token's patterns and other users' rooms are forbidden; bad
    payloads get malformed/invalid_room; each is counted; nothing leaks through."""
    alice = connected(browsers, gateway, "alice", rooms=["photo:*"])
    assert alice.call("join", {"room": "admin:1"}) == {"ok": False, "error": "forbidden"}
    assert alice.call("join", {"room": "user:bob"}) == {"ok": False, "error": "forbidden"}
    assert alice.call("leave", {"room": "user:alice"}) == {"ok": False, "error": "forbidden"}
    assert alice.call("join", {"nope": 1}) == {"ok": False, "error": "malformed"}
    assert alice.call("join", None) == {"ok": False, "error": "malformed"}
    assert alice.call("join", {"room": "bad room"}) == {"ok": False, "error": "invalid_room"}
    assert alice.call("shout", {"x": 1}) == {"ok": False, "error": "unknown_event"}
    bus.publish_to_room("admin:1", "secret.thing", {})
    bus.publish_to_user("bob", "secret.thing", {})
    bus.publish_to_user("alice", "marker.done", {})
    wait_for(lambda: alice.of_type("marker.done"))
    assert alice.of_type("secret.thing") == []
    stats = wait_stat(bus, gateway, "refused_messages", 7)
    assert stats["refused_messages.forbidden"] == 3
    assert stats["refused_messages.malformed"] == 2
    assert stats["refused_messages.invalid_room"] == 1
    assert stats["malformed"] == 4  # malformed, invalid_room, unknown_event


def test_wrong_and_expired_tokens_are_refused_with_their_codes(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """connect_error carries unauthorized / token_expired (counted); a service token is
    not a user's; a token signed with the second key (rotation) is accepted."""
    url = gateway.url
    assert refusal(browsers, url, gateway_token("u", keys={"test-1": "y" * 40})) == "unauthorized"
    assert refusal(browsers, url, "garbage") == "unauthorized"
    assert refusal(browsers, url, None) == "unauthorized"
    assert refusal(browsers, url, gateway.token("u", ttl=-5)) == "token_expired"
    service = gateway.token("svc", service="svc", scopes=["presence"])
    assert refusal(browsers, url, service) == "unauthorized"
    stats = wait_stat(bus, gateway, "refused", 5)
    assert (stats["refused.unauthorized"], stats["refused.token_expired"]) == (4, 1)
    assert bus.get_room_members("user:u") == []
    # Key rotation: a token of the second configured kid connects.
    rotated = browsers()
    rotated.connect(url, gateway.token("carol", kid="test-2"))
    assert bus.get_room_members("user:carol") == ["carol"]


def test_token_expiry_disconnects_the_socket_with_an_error_event(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """At exp the server emits error {code: token_expired}, disconnects, and drops presence."""
    b = browsers()
    b.connect(gateway.url, gateway.token("dave", ttl=2))
    assert bus.get_room_members("user:dave") == ["dave"]
    assert b.disconnected.wait(10)
    assert b.server_errors
    assert b.server_errors[0]["code"] == "token_expired"
    wait_for(lambda: bus.get_room_members("user:dave") == [])


def test_a_room_named_like_a_sid_gets_nothing_sent_to_that_socket(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """python-socketio puts each socket in a room named by its sid, where the gateway's
    private emits go. A token allowed every room joins a room named like another
    socket's sid: it must not get that socket's token_expired error."""
    victim = browsers()
    victim.connect(gateway.url, gateway.token("vic", ttl=2))
    sid = victim.client.get_sid()
    assert sid
    snoop = connected(browsers, gateway, "snoop", rooms=["*"])
    assert snoop.call("join", {"room": sid}) == {"ok": True}
    assert victim.disconnected.wait(10)
    assert victim.server_errors[0]["code"] == "token_expired"
    bus.publish_to_user("snoop", "marker.after", {})  # sent after the victim's error
    wait_for(lambda: snoop.of_type("marker.after"))
    assert snoop.server_errors == []
    assert [event for event, _ in snoop.events if event == "error"] == []


def test_room_members_list_the_socket_user_once_and_drop_it_on_disconnect(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """get_room_members from a Python bus shows the user (once for two sockets) in its
    user room and joined rooms; it goes when its last socket leaves."""
    bus.join_room("photo:7")
    tab1 = connected(browsers, gateway, "erin", rooms=["photo:*"])
    tab2 = connected(browsers, gateway, "erin", rooms=["photo:*"])
    assert bus.get_room_members("user:erin") == ["erin"]
    assert tab1.call("join", {"room": "photo:7"}) == {"ok": True}
    assert tab2.call("join", {"room": "photo:7"}) == {"ok": True}
    assert bus.get_room_members("photo:7") == sorted(["erin", bus.client_id])
    tab1.close()
    time.sleep(1.0)  # two heartbeats: erin must stay while tab2 holds her
    assert "erin" in bus.get_room_members("photo:7")
    assert bus.get_room_members("user:erin") == ["erin"]
    assert tab2.call("leave", {"room": "photo:7"}) == {"ok": True}
    assert bus.get_room_members("photo:7") == [bus.client_id]
    tab2.close()
    wait_for(lambda: bus.get_room_members("user:erin") == [])


def test_a_crashed_gateways_members_vanish_within_the_presence_ttl(
    gateways: Callable[..., GatewayProcess], bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """kill -9: nobody removes the members, they expire (ttl 3 s) and readers prune them;
    the node's client record goes the same way."""
    gw = gateways()
    b = connected(browsers, gw, "frank", rooms=["photo:*"])
    assert b.call("join", "photo:1") == {"ok": True}
    assert gw.node_id in {c.client_id for c in bus.get_clients()}
    gw.kill()
    assert bus.get_room_members("photo:1") == ["frank"]  # not cleaned up
    killed = time.monotonic()
    wait_for(lambda: bus.get_room_members("photo:1") == [], timeout=10)
    assert time.monotonic() - killed < 3.0 + 2.0
    assert bus.get_room_members("user:frank") == []
    assert gw.node_id not in {c.client_id for c in bus.get_clients()}


def test_two_gateways_relay_to_their_own_sockets_without_duplicates(
    gateways: Callable[..., GatewayProcess], bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """A socket on each node in one room: each gets each event exactly once; a user on
    both nodes stays a member until both let go, and a crash of one keeps the other's."""
    gw1, gw2 = gateways(), gateways()
    a1 = connected(browsers, gw1, "gina", rooms=["photo:*"])
    a2 = connected(browsers, gw2, "gina", rooms=["photo:*"])
    h2 = connected(browsers, gw2, "hank", rooms=["photo:*"])
    for b in (a1, a2, h2):
        assert b.call("join", "photo:5") == {"ok": True}
    assert bus.get_room_members("photo:5") == ["gina", "hank"]
    sent = [bus.publish_to_room("photo:5", "photo.step", {"n": i}).event_id for i in range(20)]
    bus.publish_to_user("gina", "user.note", {})
    bus.broadcast("system.notice", {})
    for b in (a1, a2, h2):
        wait_for(lambda b=b: len(b.of_type("system.notice")) == 1)
        assert [e["id"] for e in b.of_type("photo.step")] == sent
    assert len(a1.of_type("user.note")) == len(a2.of_type("user.note")) == 1
    assert h2.of_type("user.note") == []
    # gina leaves on node 1: node 2 still holds her.
    assert a1.call("leave", "photo:5") == {"ok": True}
    assert bus.get_room_members("photo:5") == ["gina", "hank"]
    # node 2 crashes: its members expire; node 1's gina (user room) stays.
    gw2.kill()
    wait_for(lambda: bus.get_room_members("photo:5") == [], timeout=10)
    assert bus.get_room_members("user:gina") == ["gina"]
    assert bus.get_room_members("user:hank") == []


def test_broadcast_reaches_every_socket(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """broadcast goes to every connected socket, whatever its rooms."""
    clients = [connected(browsers, gateway, f"user-{i}") for i in range(5)]
    bus.broadcast("system.maintenance", {"in": 5})
    for c in clients:
        wait_for(lambda c=c: c.of_type("system.maintenance"))
        assert c.of_type("system.maintenance")[0]["data"] == {"in": 5}


def test_a_graceful_stop_removes_presence_and_the_client_record_at_once(
    gateways: Callable[..., GatewayProcess], bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """SIGTERM: exit 0, sockets disconnected, members and node record gone without waiting
    for the expiry."""
    gw = gateways(presence_ttl=60, heartbeat_interval=5)
    b = connected(browsers, gw, "ivan")
    assert bus.get_room_members("user:ivan") == ["ivan"]
    assert gw.stop() == 0
    assert b.disconnected.wait(10)
    assert bus.get_room_members("user:ivan") == []
    assert gw.node_id not in {c.client_id for c in bus.get_clients()}


def test_limits_refuse_with_a_reason_and_are_counted(
    gateways: Callable[..., GatewayProcess], bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """Payload size, rooms per socket and connection rate per IP."""
    gw = gateways(max_payload=200, max_rooms=2, connect_rate=0.01, connect_burst=3)
    b = connected(browsers, gw, "judy", rooms=["*"])
    big = {"room": "a" * 300}
    assert b.call("join", big) == {"ok": False, "error": "payload_too_large"}
    assert b.call("join", "r:1") == {"ok": True}
    assert b.call("join", "r:2") == {"ok": True}
    assert b.call("join", "r:3") == {"ok": False, "error": "too_many_rooms"}
    assert b.call("leave", "r:1") == {"ok": True}
    assert b.call("join", "r:3") == {"ok": True}
    connected(browsers, gw, "judy")
    connected(browsers, gw, "judy")
    assert refusal(browsers, gw.url, gw.token("judy")) == "rate_limited"
    stats = wait_stat(bus, gw, "refused.rate_limited", 1)
    assert stats["refused_messages.payload_too_large"] == 1
    assert stats["refused_messages.too_many_rooms"] == 1


def test_bad_input_never_crashes_the_server(
    gateway: GatewayProcess, bus: EventBus, browsers: Callable[[], Browser]
) -> None:
    """Odd payloads, unknown events and garbage frames: refused or dropped; the server
    still serves a fresh client afterwards."""
    b = connected(browsers, gateway, "kate", rooms=["photo:*"])
    weird: list[Any] = [
        [1, 2, 3],
        {"room": None},
        {"room": ["x"]},
        {"room": {"a": "b"}},
        3.5,
        True,
        {"room": "x" * 300},
        {"room": "é"},
        {"room": "photo:\u0000"},
        "",
        "a" * 70_000,
        {"room": "photo:1", "extra": 1},
        {"a": {"b": {"c": [1] * 1000}}},
        b"\x00\xff",
    ]
    for data in weird:
        reply = b.call("join", data)
        assert reply["ok"] is False, (data, reply)
        assert reply["error"] in {"malformed", "invalid_room", "payload_too_large"}, data
    b.client.emit("join")  # no payload, no ack
    b.client.emit("leave", {"room": 1})
    b.client.emit("no.such.event", [1])
    # Raw engine.io / socket.io garbage on a WebSocket of its own.
    ws_url = gateway.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    for frames in (["garbage"], ["40", "42garbage"], ["40", '42["join",{"room":'], ["4" * 5000]):
        with websockets.sync.client.connect(ws_url, open_timeout=10) as ws:
            ws.recv(timeout=10)  # the engine.io open packet
            for frame in frames:
                ws.send(frame)
            with contextlib.suppress(TimeoutError, websockets.exceptions.ConnectionClosed):
                ws.recv(timeout=0.5)
    fresh = connected(browsers, gateway, "kate")
    bus.publish_to_user("kate", "still.alive", {})
    wait_for(lambda: fresh.of_type("still.alive") and b.of_type("still.alive"))
    assert b.client.connected


def test_eventbus_stats_lists_the_gateway_with_its_counters(
    gateway: GatewayProcess, redis_url: str, browsers: Callable[[], Browser]
) -> None:
    """`eventbus stats --json` shows the gateway node (service gateway) and its sockets."""
    connected(browsers, gateway, "liam")

    def listed() -> dict[str, Any] | None:
        out = subprocess.run(
            [sys.executable, "-m", "eventbus", "--url", redis_url, "stats", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        for client in json.loads(out):
            if client["client_id"] == gateway.node_id and client["stats"].get("sockets") == 1:
                return dict(client)
        return None

    record = wait_for(listed)
    assert record["service_name"] == "gateway"
    assert record["pid"] == gateway.pid
    assert record["stats"]["connections"] == 1


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """Run ``eventbus ARGS`` in-process with ``env``; return (exit code, stdout, stderr)."""
    from eventbus.cli import main

    for name in list(os.environ):
        if name.startswith(("EVENTBUS_", "REDIS_", "EVENT_BUS_")):
            monkeypatch.delenv(name)

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        with monkeypatch.context() as m:
            for name, value in (env or {}).items():
                m.setenv(name, value)
            code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_the_token_command_mints_a_verifiable_token(cli: Callable[..., Any]) -> None:
    """`eventbus token` signs with the EVENTBUS_GATEWAY_KEYS key --kid names (else the first)."""
    env = {"EVENTBUS_GATEWAY_KEYS": keys_text(TEST_KEYS)}
    code, out, err = cli("token", "--user", "user-456", "--rooms", "photo:*", "team:*", env=env)
    assert code == 0, err
    claims = TokenVerifier(TEST_KEYS).verify(out.strip())
    assert (claims.sub, claims.rooms) == ("user-456", ("photo:*", "team:*"))
    code, out, err = cli(
        "token",
        "--service",
        "thumbs",
        "--scopes",
        "publish:photo.*",
        "presence",
        "--kid",
        "test-2",
        "--ttl",
        "60",
        env=env,
    )
    claims = TokenVerifier({"test-2": TEST_KEYS["test-2"]}).verify(out.strip())
    assert (claims.service, claims.scopes) == ("thumbs", ("publish:photo.*", "presence"))
    assert 50 < claims.seconds_left() <= 60
    assert cli("token", "--user", "u")[0] == 2  # no key anywhere
    assert cli("token", "--user", "u", "--key", "k:short")[0] == 2
    assert cli("token", "--user", "bad user", env=env)[0] == 2
    assert cli("token", "--user", "u", "--kid", "nope", env=env)[0] == 2


def test_the_gateway_command_refuses_bad_configuration_before_listening(
    cli: Callable[..., Any], redis_url: str
) -> None:
    """No keys, a short key, no Redis, a bad origin: exit 2 with a message, nothing started."""
    keys = keys_text(TEST_KEYS)
    cases = [
        (("gateway", "--url", redis_url, "--port", "0"), "EVENTBUS_GATEWAY_KEYS"),
        (("gateway", "--url", redis_url, "--keys", "k:short"), "32"),
        (("gateway", "--keys", keys), "needs Redis"),
        (("gateway", "--url", redis_url, "--keys", keys, "--origins", "x"), "origins"),
        (("gateway", "--url", redis_url, "--keys", keys, "--heartbeat-interval", "99"), "below"),
    ]
    for args, message in cases:
        code, _, err = cli(*args)
        assert code == 2, args
        assert message in err, (args, err)


def test_the_gateway_exits_1_when_redis_is_unreachable(redis_server_factory: Any) -> None:
    """Redis down at start: one line says why, exit 1 (no half-started server)."""
    server = redis_server_factory()
    url = server.url
    server.stop()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    environ["EVENTBUS_GATEWAY_KEYS"] = keys_text(TEST_KEYS)
    out = subprocess.run(
        [sys.executable, "-m", "eventbus", "gateway", "--url", url, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
        check=False,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "could not start: Redis" in out.stderr
    assert "Traceback" not in out.stderr
