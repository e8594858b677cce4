"""eventbus.contrib.flask with a real Flask app (test client, CLI runner) and a real Redis."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, current_app

import _flask_app
from eventbus import (
    BusStateError,
    ConfigurationError,
    Event,
    EventBus,
    InvalidPatternError,
    RedisConfig,
    ValidationError,
)
from eventbus.contrib.flask import (
    EventBusExtension,
    EventBusState,
    config_from_mapping,
    current_bus,
)

from _helpers import Recorder, wait_for

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture
def url(redis_url: str) -> str:
    """The session Redis, under a key prefix of this test's own."""
    return f"{redis_url}?key_prefix=fl{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """``make_app(config)``: apps from the test app factory, their buses closed at teardown."""
    apps: list[Flask] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Flask:
        app = _flask_app.create_app(config, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        _flask_app.events.close(app, timeout=2.0)


@pytest.fixture
def spy_bus() -> Iterator[Callable[[str], EventBus]]:
    """``spy_bus(url)``: a plain connected bus (another 'service'), disconnected at teardown."""
    buses: list[EventBus] = []

    def make(url: str) -> EventBus:
        bus = EventBus.from_url(url, service_name="spy")
        buses.append(bus)
        bus.connect()
        return bus

    yield make
    for bus in buses:
        bus.disconnect(timeout=2.0)


def _connection_names(client: redis.Redis, service_name: str) -> list[str]:
    """Names of the Redis connections of buses of ``service_name`` (CLIENT SETNAME)."""
    return [c["name"] for c in client.client_list() if c["name"].startswith(f"{service_name}:")]


def _subprocess_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    env["FLASK_EVENTBUS_URL"] = url
    env.pop("FLASK_APP", None)
    return env


class _Lines:
    """Lines of a subprocess stream, read on a thread, to wait on with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The first line (from now on) containing ``text``."""
        try:
            while True:
                line = self.lines.get(timeout=timeout)
                self.seen.append(line)
                if text in line:
                    return line
        except queue.Empty:
            raise AssertionError(f"no line with {text!r} within {timeout}s: {self.seen}") from None


# -- publishing from a route -------------------------------------------------------------


def test_route_publishes_and_a_subscriber_on_another_bus_receives(
    url: str, make_app: Callable[..., Flask], spy_bus: Callable[[str], EventBus]
) -> None:
    """A view publishes through current_bus; a separate bus on the same Redis receives it,
    with the app's service name as source."""
    spy = Recorder()
    spy_bus(url).subscribe("photo.*", spy)
    app = make_app({"EVENTBUS_URL": url})
    response = app.test_client().post("/publish/photo.uploaded", json={"photoId": "123"})
    assert response.status_code == 200
    (event,) = spy.wait(1)
    assert event.type == "photo.uploaded"
    assert event.data == {"photoId": "123"}
    assert event.source == "flask-test"
    assert event.id == response.json["id"]  # type: ignore[index]


def test_extension_handlers_run_in_the_app_context(
    url: str, make_app: Callable[..., Flask], spy_bus: Callable[[str], EventBus]
) -> None:
    """A handler registered with @events.on before any app existed runs on the app's bus,
    inside its app context: it reads current_app and publishes a reply with current_bus."""
    pongs = Recorder()
    spy = spy_bus(url)
    spy.subscribe("app.pong", pongs)
    app = make_app({"EVENTBUS_URL": url}, name="pinged-app")
    with app.app_context():
        current_bus.connect()  # first use: the app's bus connects with its handlers
    spy.publish("app.ping", {"n": 1})
    (pong,) = pongs.wait(1)
    assert pong.data == {"app": "pinged-app", "pid": os.getpid(), "ping": {"n": 1}}


def test_handler_added_after_connect_is_subscribed_once(make_app: Callable[..., Flask]) -> None:
    """On memory://, a handler registered on the extension after the app's bus connected is
    subscribed on it at once, and only once."""
    ext = EventBusExtension()
    app = Flask("late")
    app.config["EVENTBUS_URL"] = f"memory://late-{uuid.uuid4().hex[:8]}"
    ext.init_app(app)
    try:
        bus = ext.get_bus(app)
        got = Recorder()
        ext.subscribe("late.*", got)
        assert [s.pattern for s in bus.subscriptions()] == ["late.*"]
        bus.publish("late.event", 1)
        (event,) = got.wait(1)
        assert event.data == 1
    finally:
        ext.close(app)


# -- app factory, several apps -----------------------------------------------------------


def test_two_apps_in_one_process_have_their_own_buses(
    redis_url: str, make_app: Callable[..., Flask], spy_bus: Callable[[str], EventBus]
) -> None:
    """Two apps from one factory with different key prefixes: each route publishes on its
    own app's bus, each handler replies from its own app, and nothing crosses over."""
    url_a = f"{redis_url}?key_prefix=appa{uuid.uuid4().hex[:6]}:"
    url_b = f"{redis_url}?key_prefix=appb{uuid.uuid4().hex[:6]}:"
    got_a, got_b = Recorder(), Recorder()
    spy_bus(url_a).subscribe("*", got_a)
    spy_bus(url_b).subscribe("*", got_b)
    app_a = make_app({"EVENTBUS_URL": url_a}, name="app-a")
    app_b = make_app({"EVENTBUS_URL": url_b, "EVENTBUS_SERVICE_NAME": "svc-b"}, name="app-b")
    app_a.test_client().post("/publish/from.a", json="a")
    app_b.test_client().post("/publish/from.b", json="b")
    (event_a,) = got_a.wait(1)
    (event_b,) = got_b.wait(1)
    assert (event_a.type, event_a.source) == ("from.a", "flask-test")
    assert (event_b.type, event_b.source) == ("from.b", "svc-b")
    with app_a.app_context():
        bus_a = current_bus.client_id
    with app_b.app_context():
        bus_b = current_bus.client_id
    assert bus_a != bus_b
    # The shared extension's handler is subscribed on both buses, each in its own app.
    with app_b.app_context():
        current_bus.publish("app.ping", "to-b")
    pong = wait_for(lambda: [e for e in got_b.events if e.type == "app.pong"], what="pong")
    assert pong[0].data["app"] == "app-b"
    assert [e.type for e in got_a.events] == ["from.a"]


# -- lazy connection, fork ---------------------------------------------------------------


def test_bus_connects_lazily_on_first_use_and_closes(
    url: str, redis_client: redis.Redis, make_app: Callable[..., Flask]
) -> None:
    """init_app opens no connection; the first current_bus access does; close() drops it."""
    app = make_app({"EVENTBUS_URL": url})
    state = app.extensions["eventbus"]
    assert isinstance(state, EventBusState)
    assert not state.is_connected()
    assert _connection_names(redis_client, "flask-test") == []
    with app.app_context():
        client_id = current_bus.client_id  # first use
    assert state.is_connected()
    assert wait_for(lambda: _connection_names(redis_client, "flask-test"), what="connections")
    assert all(name == client_id for name in _connection_names(redis_client, "flask-test"))
    _flask_app.events.close(app)
    assert not state.is_connected()
    wait_for(lambda: not _connection_names(redis_client, "flask-test"), what="no connections")


def _fork(child: Callable[[], str]) -> tuple[int, str]:
    """Run ``child`` in a forked process; return its exit status and what it returned."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, child().encode())
            code = 0
        except BaseException as exc:
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


@pytest.mark.parametrize("connected_in_parent", [False, True], ids=["preload", "parent-used"])
def test_forked_workers_publish_with_connections_of_their_own(
    url: str,
    redis_client: redis.Redis,
    make_app: Callable[..., Flask],
    spy_bus: Callable[[str], EventBus],
    connected_in_parent: bool,
) -> None:
    """gunicorn --preload: the app is made in the parent, then two forked workers each serve a
    request. Each worker's bus has its own client id (with its pid) and Redis connection, and
    the parent's bus is never touched (still unconnected with --preload)."""
    spy = Recorder()
    spy_bus(url).subscribe("worker.*", spy)
    app = make_app({"EVENTBUS_URL": url})
    state = app.extensions["eventbus"]
    parent_id = None
    if connected_in_parent:
        parent_id = _flask_app.events.get_bus(app).client_id
    parent_names = _connection_names(redis_client, "flask-test")
    assert set(parent_names) == ({parent_id} if connected_in_parent else set())

    def worker() -> str:
        response = app.test_client().post("/publish/worker.hello", json={"pid": os.getpid()})
        assert response.status_code == 200, response.data
        body = response.json
        assert body is not None
        names = _connection_names(redis_client, "flask-test")
        assert body["client_id"] in names, (body, names)
        _flask_app.events.close(app)
        return json.dumps(body)

    results = [_fork(worker) for _ in range(2)]
    assert [code for code, _ in results] == [0, 0], results
    bodies = [json.loads(output) for _, output in results]
    events = spy.wait(2)
    assert sorted(e.data["pid"] for e in events) == sorted(b["pid"] for b in bodies)
    client_ids = {b["client_id"] for b in bodies}
    assert len(client_ids) == 2
    for body in bodies:
        assert body["pid"] != os.getpid()
        assert f":{body['pid']}:" in body["client_id"]
    assert parent_id not in client_ids
    assert state.is_connected() is connected_in_parent
    if connected_in_parent:
        assert _flask_app.events.get_bus(app).client_id == parent_id


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"EVENTBUS_URL": "ftp://example.com"}, "url"),
        ({"EVENTBUS_URL": "redis://localhost:6379/0?nonsense=1"}, "unknown option"),
        ({"EVENTBUS_PUBLISH_TIMEOUT": "soon"}, "EVENTBUS_PUBLISH_TIMEOUT"),
        ({"EVENTBUS_PUBLISH_TIMEOUT": -1}, "publish_timeout"),
        ({"EVENTBUS_PUBLISH_TIMOUT": 1.0}, "did you mean EVENTBUS_PUBLISH_TIMEOUT"),
        ({"EVENTBUS_SERVICE_NAME": "photo api!"}, "service_name"),
        ({"EVENTBUS_OVERFLOW": "explode"}, "overflow"),
        ({"EVENTBUS_HANDLERS": "maybe"}, "EVENTBUS_HANDLERS"),
        ({"EVENTBUS_PERFORMANCE": {"batch_sise": 5}}, "EVENTBUS_PERFORMANCE"),
        ({"EVENTBUS_URL": "memory://", "EVENTBUS_REDIS": RedisConfig()}, "one"),
        ({"EVENTBUS_REDIS": "redis://localhost"}, "RedisConfig"),
        ({"EVENTBUS_CONFIG": "memory://"}, "EventBusConfig"),
    ],
)
def test_bad_config_raises_configuration_error_at_init_app(
    config: dict[str, Any], message: str
) -> None:
    """init_app checks every EVENTBUS_* key before any I/O and registers nothing if one is bad."""
    app = Flask("bad")
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=message):
        EventBusExtension(app)
    assert "eventbus" not in app.extensions
    assert "eventbus" not in app.cli.commands


def test_config_keys_map_to_config_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVENTBUS_* keys set the config; strings from the environment are read as numbers;
    the key prefix applies to the URL; the service name defaults to the app's name."""
    monkeypatch.setenv("FLASK_EVENTBUS_PUBLISH_TIMEOUT", "0.5")  # from_prefixed_env: a float
    app = Flask("my_app.web")
    app.config.from_prefixed_env()
    app.config.update(
        EVENTBUS_URL="redis://cache.internal:6380/2",
        EVENTBUS_KEY_PREFIX="photos:",
        EVENTBUS_HANDLER_THREADS="4",
        EVENTBUS_OVERFLOW="drop_newest",
        EVENTBUS_PERFORMANCE={"batch_size": 10},
        EVENTBUS_HANDLERS="off",
    )
    EventBusExtension(app)
    state = app.extensions["eventbus"]
    config = state.config
    assert config.service_name == "my_app.web"
    assert config.redis is not None
    assert (config.redis.host, config.redis.port, config.redis.db) == ("cache.internal", 6380, 2)
    assert config.key_prefix == "photos:"
    assert config.publish_timeout == 0.5
    assert config.handler_threads == 4
    assert config.overflow == "drop_newest"
    assert config.performance.batch_size == 10
    assert state.handlers is False
    assert not state.is_connected()


def test_whole_config_object_and_defaults() -> None:
    """EVENTBUS_CONFIG replaces the other keys (mixing them is an error); no keys at all
    means the memory:// broker."""
    whole = config_from_mapping({}, default_service_name="svc")
    assert whole.transport_url == "memory://"
    assert whole.service_name == "svc"
    assert config_from_mapping({"EVENTBUS_CONFIG": whole}, default_service_name="x") is whole
    with pytest.raises(ConfigurationError, match="EVENTBUS_URL"):
        config_from_mapping(
            {"EVENTBUS_CONFIG": whole, "EVENTBUS_URL": "memory://"}, default_service_name="x"
        )


def test_init_app_twice_is_an_error() -> None:
    """One event bus extension per app: a second init_app raises BusStateError."""
    app = Flask("twice")
    app.config["EVENTBUS_URL"] = "memory://"
    EventBusExtension(app)
    with pytest.raises(BusStateError, match="already"):
        EventBusExtension().init_app(app)


def test_subscription_arguments_are_checked_when_registered() -> None:
    """ext.on / ext.subscribe check patterns and options at once, before any app exists."""
    ext = EventBusExtension()
    with pytest.raises(InvalidPatternError):
        ext.on("photo uploaded")(print)
    with pytest.raises(ValidationError):
        ext.subscribe("photo.*", print, concurrency=0)
    with pytest.raises(ValidationError, match="unexpected keyword"):
        ext.subscribe("photo.*", print, retries=3)


# -- current_bus -------------------------------------------------------------------------


def test_current_bus_outside_an_app_context_raises_a_clear_runtime_error() -> None:
    """Like current_app: outside an app context, current_bus raises a RuntimeError (a
    BusStateError) that says so; in the context of an app without the extension, too."""
    with pytest.raises(RuntimeError, match="outside of application context") as info:
        current_bus.publish("photo.uploaded")
    assert isinstance(info.value, BusStateError)
    with pytest.raises(BusStateError, match="outside of application context"):
        _flask_app.events.get_bus()
    bare = Flask("bare")
    with bare.app_context(), pytest.raises(BusStateError, match="init_app"):
        current_bus.publish("photo.uploaded")


def test_memory_url_works_in_process(make_app: Callable[..., Flask]) -> None:
    """With EVENTBUS_URL="memory://...", a route's publish reaches the app's own handlers
    (the setup for users' tests), and the handler sees the app."""
    ext = EventBusExtension()
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    @ext.on("order.*")
    def on_order(event: Event) -> None:
        seen.append((event.type, current_app.name))
        done.set()

    app = Flask("shop")
    app.config["EVENTBUS_URL"] = f"memory://shop-{uuid.uuid4().hex[:8]}"
    ext.init_app(app)

    @app.post("/order")
    def order() -> str:
        current_bus.publish("order.placed", {"sku": "A1"})
        return "ok"

    try:
        assert app.test_client().post("/order").status_code == 200
        assert done.wait(5)
        assert seen == [("order.placed", "shop")]
    finally:
        ext.close(app)


# -- the `flask eventbus` commands -------------------------------------------------------


def test_cli_publish_sends_with_the_apps_config(
    url: str, make_app: Callable[..., Flask], spy_bus: Callable[[str], EventBus]
) -> None:
    """`flask eventbus publish TYPE DATA` publishes on the app's transport and prefix, as the
    app's service, without connecting the app's own bus (its handlers do not run)."""
    spy = Recorder()
    spy_bus(url).subscribe("photo.*", spy)
    app = make_app({"EVENTBUS_URL": url})
    result = app.test_cli_runner().invoke(
        args=["eventbus", "publish", "photo.uploaded", '{"photoId": "9"}', "--header", "k=v"]
    )
    assert result.exit_code == 0, result.output
    (event,) = spy.wait(1)
    assert (event.data, event.source, dict(event.headers)) == (
        {"photoId": "9"},
        "flask-test",
        {"k": "v"},
    )
    assert event.id in result.output
    assert "1 receiver(s)" in result.output
    assert not app.extensions["eventbus"].is_connected()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["photo.uploaded", "{not json"], "not valid JSON"),
        (["photo uploaded", "1"], "photo uploaded"),
        (["photo.uploaded", "1", "--room", "r", "--broadcast"], "exclude"),
        (["photo.uploaded", "1", "--header", "novalue"], "K=V"),
    ],
)
def test_cli_publish_bad_input_exits_2_and_sends_nothing(
    url: str,
    make_app: Callable[..., Flask],
    spy_bus: Callable[[str], EventBus],
    args: list[str],
    message: str,
) -> None:
    """Bad JSON, names or options exit 2 with a message; nothing is published."""
    spy = Recorder()
    spy_bus(url).subscribe("*", spy)
    app = make_app({"EVENTBUS_URL": url})
    result = app.test_cli_runner().invoke(args=["eventbus", "publish", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    spy_bus(url).publish("marker")  # anything sent before it would arrive first
    (event,) = spy.wait(1)
    assert event.type == "marker"


def test_cli_listen_prints_count_events(
    url: str, make_app: Callable[..., Flask], spy_bus: Callable[[str], EventBus]
) -> None:
    """`flask eventbus listen PATTERN... --count N --json` prints N matching events, one JSON
    object per line, and exits 0."""
    app = make_app({"EVENTBUS_URL": url})
    publisher = spy_bus(url)
    stop = threading.Event()

    def keep_publishing() -> None:  # until the listener has had its events
        n = 0
        while not stop.wait(0.05):
            n += 1
            publisher.publish("other.event", n)
            publisher.publish("photo.uploaded", n)
            publisher.publish("order.paid", n)

    thread = threading.Thread(target=keep_publishing)
    thread.start()
    try:
        result = app.test_cli_runner().invoke(
            args=["eventbus", "listen", "photo.*", "order.*", "--count", "4", "--json"]
        )
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 4
    assert {line["type"] for line in lines} <= {"photo.uploaded", "order.paid"}
    assert {line["source"] for line in lines} == {"spy"}


def test_cli_listen_timeout_without_events_exits_1(
    url: str, make_app: Callable[..., Flask]
) -> None:
    """`listen --count 1 --timeout S` with nothing published exits 1 and says so."""
    app = make_app({"EVENTBUS_URL": url})
    result = app.test_cli_runner().invoke(
        args=["eventbus", "listen", "nothing.*", "--count", "1", "--timeout", "0.3"]
    )
    assert result.exit_code == 1
    assert "timed out" in result.output


def test_cli_listen_subprocess_stops_on_sigterm(
    url: str, spy_bus: Callable[[str], EventBus]
) -> None:
    """A real `flask --app ... eventbus listen` prints events until SIGTERM, then exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "_flask_app:create_app", "eventbus", "listen"],
        env=_subprocess_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        err, out = _Lines(proc.stderr), _Lines(proc.stdout)
        err.wait_for("listening for '*'")
        spy_bus(url).publish("photo.uploaded", {"photoId": "7"})
        line = out.wait_for("photo.uploaded")
        assert '{"photoId":"7"}' in line
        assert "spy" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_cli_worker_runs_the_handlers_and_stops_on_sigterm(
    url: str, spy_bus: Callable[[str], EventBus]
) -> None:
    """`flask eventbus worker` runs the extension's handlers (in the app context) until
    SIGTERM, then disconnects: its client record is gone at once, not after a TTL."""
    spy = spy_bus(url)
    pongs = Recorder()
    spy.subscribe("app.pong", pongs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "_flask_app:create_app", "eventbus", "worker"],
        env=_subprocess_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        err = _Lines(proc.stderr)
        line = err.wait_for("handler(s)")
        worker_id = line.split()[1].rstrip(":")
        err.wait_for("answer_ping")
        spy.publish("app.ping", "hi")
        (pong,) = pongs.wait(1, timeout=10)
        assert pong.data["pid"] == proc.pid
        assert pong.data["ping"] == "hi"
        assert worker_id in {c.client_id for c in spy.get_clients()}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert worker_id not in {c.client_id for c in spy.get_clients()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_bus_is_disconnected_at_interpreter_exit(
    url: str, spy_bus: Callable[[str], EventBus]
) -> None:
    """A process that used current_bus and exits without closing it still disconnects
    (atexit): its client record is removed at once rather than expiring."""
    script = (
        "import sys, _flask_app\n"
        "app = _flask_app.create_app()\n"
        "with app.app_context():\n"
        "    from eventbus.contrib.flask import current_bus\n"
        "    print(current_bus.client_id, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    spy = spy_bus(url)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=_subprocess_env(url),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        client_id = proc.stdout.readline().strip()
        assert client_id.startswith("flask-test:"), client_id
        wait_for(lambda: client_id in {c.client_id for c in spy.get_clients()}, what="client")
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
        assert client_id not in {c.client_id for c in spy.get_clients()}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_cli_publish_to_an_unreachable_server_exits_3(make_app: Callable[..., Flask]) -> None:
    """`flask eventbus publish` against a port nobody listens on exits 3 and names the URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = make_app({"EVENTBUS_URL": f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.5"})
    result = app.test_cli_runner().invoke(args=["eventbus", "publish", "photo.uploaded"])
    assert result.exit_code == 3, result.output
    assert f"cannot connect to redis://127.0.0.1:{port}/0" in result.output


def test_handlers_off_leaves_the_apps_bus_without_subscriptions() -> None:
    """EVENTBUS_HANDLERS=False (publish-only web processes): the app's bus subscribes none of
    the extension's handlers, while a bus made with handlers=True (the worker's) has them."""
    ext = EventBusExtension()
    ext.on("photo.*")(print)
    app = Flask("web")
    app.config.update(EVENTBUS_URL=f"memory://web-{uuid.uuid4().hex[:8]}", EVENTBUS_HANDLERS=False)
    ext.init_app(app)
    try:
        assert ext.get_bus(app).subscriptions() == []
        worker_bus = ext.state(app).new_bus(handlers=True)
        assert [s.pattern for s in worker_bus.subscriptions()] == ["photo.*"]
        worker_bus.disconnect(0)
    finally:
        ext.close(app)
