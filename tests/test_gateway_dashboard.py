"""The gateway dashboard (eventbus.gateway.dashboard) served for real by uvicorn.

The app runs in a thread on a free loopback port with the real test Redis; a Python
EventBus joins rooms and publishes, and plain HTTP requests read the page and the API.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("socketio")
pytest.importorskip("uvicorn")
pytest.importorskip("jwt")

import socketio
import uvicorn

from eventbus import EventBus
from eventbus._core.keyspace import Keyspace
from eventbus._core.stats import Counters
from eventbus.gateway._app import Gateway, build_app
from eventbus.gateway._auth import mint_token
from eventbus.gateway._config import GatewayConfig
from eventbus.gateway.dashboard import Dashboard, DashboardLimits

from _helpers import wait_for

KID = "k1"
SECRET = "dashboard-test-secret-of-at-least-32-bytes"


class _Server:
    """uvicorn serving ``app`` in a thread on a free port, stopped by :meth:`stop`."""

    def __init__(self, app: Any) -> None:
        # wsproto, as `eventbus gateway` serves (uvicorn's default, the legacy websockets
        # server, fails with uvicorn < 0.31 and websockets >= 13).
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="on",
            log_level="warning",
            access_log=False,
            ws="wsproto",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 10, "uvicorn up")
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def _token(**claims: Any) -> str:
    claims.setdefault("sub", "ops")
    return mint_token(kid=KID, secret=SECRET, **claims)


ADMIN = {"scopes": ["admin"], "service": "dashboard"}


def _get(
    url: str, token: str | None = None, method: str = "GET", timeout: float = 15
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _api(server: _Server, path: str, token: str | None = None) -> Any:
    status, _, body = _get(server.url + path, token or _token(**ADMIN))
    assert status == 200, (status, body)
    return json.loads(body)


def _state_with_room(server: _Server, room: str) -> dict[str, Any] | None:
    state: dict[str, Any] = _api(server, "/api/state")
    return state if any(r["room"] == room for r in state["rooms"]["listed"]) else None


@pytest.fixture
def gateway_app(redis_url: str) -> tuple[Gateway, Any]:
    """The real gateway app (Socket.IO, services, dashboard) on the test Redis."""
    return build_app(GatewayConfig(redis_url=redis_url, keys={KID: SECRET}, port=0))


@pytest.fixture
def server(gateway_app: tuple[Gateway, Any]) -> Iterator[_Server]:
    running = _Server(gateway_app[1])
    try:
        # The tail's subscriber starts with the gateway; wait until Redis confirmed it.
        wait_for(lambda: _api(running, "/api/state")["tail"]["subscribed"], 10, "tail")
        yield running
    finally:
        running.stop()


@pytest.fixture
def bus(redis_url: str) -> Iterator[EventBus]:
    with EventBus.from_url(redis_url, service_name="photo-service") as connected:
        yield connected


def test_page_is_served_with_its_script_and_style(server: _Server) -> None:
    """`/` is the HTML page loading the plain JS and CSS files, all served locally."""
    status, headers, body = _get(server.url + "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    page = body.decode()
    assert '<script src="static/dashboard.js"' in page
    assert 'href="static/dashboard.css"' in page
    assert "http://" not in page
    assert "https://" not in page
    status, headers, script = _get(server.url + "/static/dashboard.js")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert b"api/state" in script
    assert b"api/tail" in script
    assert b"Bearer " in script
    status, headers, _ = _get(server.url + "/static/dashboard.css")
    assert status == 200
    assert headers["content-type"].startswith("text/css")
    status, _, _ = _get(server.url + "/static/../dashboard.py")
    assert status == 404


def test_state_lists_room_members_and_client_records(
    gateway_app: tuple[Gateway, Any], server: _Server, bus: EventBus
) -> None:
    """/api/state shows a room a Python bus joined, with the bus as member, and its
    client record with the stats that `eventbus stats` shows."""
    bus.join_room("photo:42")
    bus.publish("photo.uploaded", {"id": 42})
    assert bus.get_room_members("photo:42") == [bus.client_id]

    gateway = gateway_app[0]
    # The list of rooms comes from a SCAN the dashboard reuses for a moment.
    state = wait_for(lambda: _state_with_room(server, "photo:42"), 10, "room listed")

    rooms = {r["room"]: r for r in state["rooms"]["listed"]}
    assert rooms["photo:42"]["count"] == 1
    [member] = rooms["photo:42"]["members"]
    assert member["id"] == bus.client_id
    assert member["info"] == {"client_id": bus.client_id, "kind": "bus"}
    clients = {c["client_id"]: c for c in state["services"]["listed"]}
    mine = clients[bus.client_id]
    assert mine["service_name"] == "photo-service"
    assert set(mine["stats"]) >= {"events_published", "events_received", "reconnects"}
    assert state["node"]["node_id"] == gateway.node_id
    assert state["node"]["counters"]["relay_ready"] is True
    assert state["tail"]["subscribed"] is True

    bus.leave_room("photo:42")
    # Its presence is gone at once: the room is no longer listed (the key may be cached).
    rooms_after = {r["room"] for r in _api(server, "/api/state")["rooms"]["listed"]}
    assert "photo:42" not in rooms_after


def test_tail_shows_events_published_from_python(server: _Server, bus: EventBus) -> None:
    """Plain, room, user and broadcast events appear in the tail, as decoded envelopes."""
    start = _api(server, "/api/tail")["last"]
    bus.publish("photo.uploaded", {"id": 1})
    bus.publish_to_room("photo:1", "photo.liked", {"by": "ann"})
    bus.publish_to_user("user-7", "notify.ready", {"n": 3})
    bus.broadcast("system.notice", {"text": "hello"})

    seen: list[dict[str, Any]] = []
    after = start
    deadline = time.monotonic() + 10
    while len(seen) < 4 and time.monotonic() < deadline:
        tail = _api(server, f"/api/tail?after={after}&wait=5")
        seen += tail["events"]
        after = tail["last"]
    by_type = {e["envelope"]["type"]: e for e in seen}
    assert set(by_type) == {"photo.uploaded", "photo.liked", "notify.ready", "system.notice"}
    assert (by_type["photo.uploaded"]["kind"], by_type["photo.uploaded"]["target"]) == (
        "event",
        "photo.uploaded",
    )
    assert by_type["photo.uploaded"]["envelope"]["data"] == {"id": 1}
    assert (by_type["photo.liked"]["kind"], by_type["photo.liked"]["target"]) == (
        "room",
        "photo:1",
    )
    assert (by_type["notify.ready"]["kind"], by_type["notify.ready"]["target"]) == (
        "user",
        "user-7",
    )
    assert by_type["system.notice"]["kind"] == "broadcast"
    assert [e["seq"] for e in seen] == sorted(e["seq"] for e in seen)
    assert all(e["seq"] > start for e in seen)


def test_api_refuses_requests_without_an_admin_token(server: _Server) -> None:
    """No token, a bad or expired one, or one without the admin scope: 401/403, counted."""
    cases = [
        (None, 401, "unauthorized"),
        ("not-a-jwt", 401, "unauthorized"),
        (mint_token(kid=KID, secret="x" * 40, sub="ops", scopes=["admin"]), 401, "unauthorized"),
        (_token(scopes=["admin"], ttl=-10), 401, "token_expired"),
        (_token(rooms=["*"]), 403, "forbidden"),  # a user token, however broad
        (_token(service="svc", scopes=["publish:*", "subscribe:*"]), 403, "forbidden"),
    ]
    for token, status, code in cases:
        for path in ("/api/state", "/api/tail"):
            got, headers, body = _get(server.url + path, token)
            assert (got, json.loads(body)["error"]) == (status, code), (token, path)
            assert b"photo" not in body
    got, headers, _ = _get(server.url + "/api/state")
    assert got == 401
    assert headers["www-authenticate"].startswith("Bearer")

    counters = _api(server, "/api/state")["node"]["counters"]
    assert counters["dashboard_unauthorized"] == 2 * len(cases) + 1


def test_bad_input_gets_4xx_is_counted_and_the_server_keeps_serving(server: _Server) -> None:
    """Malformed, unexpected or huge queries and other methods are refused and counted."""
    admin = _token(**ADMIN)
    bad = [
        ("GET", "/api/tail?after=abc", 400),
        ("GET", "/api/tail?after=-1", 400),
        ("GET", "/api/tail?after=1&after=2", 400),
        ("GET", "/api/tail?wait=nan", 400),
        ("GET", "/api/tail?wait=1e9", 400),
        ("GET", "/api/tail?limit=0", 400),
        ("GET", "/api/state?bogus=1", 400),
        ("GET", "/api/state?%ff%fe=1", 400),
        ("GET", "/api/state?rooms=" + "9" * 5000, 414),
        ("POST", "/api/state", 405),
        ("DELETE", "/", 405),
    ]
    for method, path, status in bad:
        got, _, body = _get(server.url + path, admin, method=method)
        assert got == status, (method, path, body)
        assert json.loads(body)["error"]
    assert _get(server.url + "/api/nothing-here", admin)[0] == 404  # counted apart

    state = _api(server, "/api/state")
    assert state["node"]["counters"]["dashboard_malformed"] == len(bad)
    assert state["node"]["counters"]["dashboard_not_found"] == 1
    assert _get(server.url + "/")[0] == 200


def test_long_poll_returns_when_an_event_arrives(server: _Server, bus: EventBus) -> None:
    """A tail request waiting for news is answered with the event published meanwhile."""
    start = _api(server, "/api/tail")["last"]
    result: dict[str, Any] = {}

    def poll() -> None:
        result.update(_api(server, f"/api/tail?after={start}&wait=10"))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        bus.publish("photo.deleted", {"id": 9})
    finally:
        poller.join(timeout=15)
    assert [e["envelope"]["type"] for e in result["events"]] == ["photo.deleted"]


def test_ring_buffer_is_bounded_and_reports_what_was_missed() -> None:
    """The tail keeps the last `tail_size` events; older ones are reported as missed."""
    node = type("N", (), {"keys": Keyspace(prefix="app:"), "counters": Counters()})()
    dashboard = Dashboard(node, limits=DashboardLimits(tail_size=3, payload_bytes=256))
    for i in range(5):
        dashboard.record("app:ev:t.x", json.dumps({"type": "t.x", "data": i}).encode())
    dashboard.record("app:broadcast", b"x" * 1000)

    async def read(after: int, limit: int) -> dict[str, Any]:
        return await dashboard.tail(after=after, wait=0, limit=limit)

    everything = asyncio.run(read(0, 100))
    assert [e["seq"] for e in everything["events"]] == [4, 5, 6]
    assert everything["last"] == 6
    since_one = asyncio.run(read(1, 2))
    assert [e["seq"] for e in since_one["events"]] == [5, 6]
    assert since_one["missed"] == 3  # 2 and 3 fell out of the buffer, 4 over the limit
    # A client that counted on a node that has since restarted is answered at once.
    ahead = asyncio.run(asyncio.wait_for(dashboard.tail(after=100, wait=60, limit=10), 10))
    assert ahead["events"] == []
    assert ahead["last"] == 6
    cut = since_one["events"][-1]
    assert cut["truncated"] is True
    assert cut["kind"] == "broadcast"
    assert len(cut["raw"]) == 256


def test_state_lists_browser_sockets_and_their_presence(server: _Server) -> None:
    """A Socket.IO client with a user token shows up as a socket of this node, with its
    user, and as the member of its user room and of a room it joined."""
    client = socketio.Client(reconnection=False)
    client.connect(
        server.url,
        auth={"token": _token(sub="user-5", rooms=["photo:*"])},
        transports=["websocket"],
        wait_timeout=10,
    )
    try:
        assert client.call("join", {"room": "photo:7"}, timeout=10) == {"ok": True}
        state = wait_for(lambda: _state_with_room(server, "photo:7"), 10, "room listed")
        [socket] = [s for s in state["sockets"] if s["namespace"] == "/"]
        assert socket["sid"] == client.get_sid("/")
        assert socket["user"] == "user-5"
        assert socket["rooms"] == ["photo:7", "user:user-5"]
        rooms = {r["room"]: [m["id"] for m in r["members"]] for r in state["rooms"]["listed"]}
        assert rooms["user:user-5"] == ["user-5"]
        assert rooms["photo:7"] == ["user-5"]
    finally:
        client.disconnect()
    wait_for(lambda: not _api(server, "/api/state")["sockets"], 10, "socket gone")


def test_state_lists_services_connected_through_this_node(server: _Server) -> None:
    """A bus on the http:// transport shows up with its scopes among this node's
    services, and its client record (written through the gateway) among all services."""
    token = _token(sub="thumbs", service="thumbs", scopes=["publish:photo.*", "presence"])
    with EventBus.from_url(server.url, service_name="thumbs", token=token) as remote:
        state = wait_for(
            lambda: (s := _api(server, "/api/state"))["node_services"] and s, 10, "service"
        )
        [svc] = state["node_services"]
        assert svc["name"] == "thumbs"
        assert svc["client_id"] == remote.client_id
        assert "publish:photo.*" in svc["scopes"]
        clients = {c["client_id"]: c for c in state["services"]["listed"]}
        assert clients[remote.client_id]["service_name"] == "thumbs"
    wait_for(lambda: not _api(server, "/api/state")["node_services"], 10, "service gone")
