"""eventbus.testing's RecordingBus swapped into the Flask and Django integrations.

Users' tests set ``EVENTBUS_BUS_CLASS`` (Flask) or ``EVENTBUS["BUS_CLASS"]`` (Django)
to ``"eventbus.testing.RecordingBus"``, then assert what their views published and
``drain()`` their handlers, with no server. Flask runs here, through the test client;
Django runs its own test runner on ``tests/django_project/photos/tests.py`` in a
subprocess (Django's settings are process-wide, as in test_contrib_django.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from flask import Flask

import _flask_app
from eventbus import ConfigurationError, Event, EventBus, EventBusConfig, HandlerError
from eventbus.contrib.django import DjangoEventBus
from eventbus.contrib.django.conf import read_settings
from eventbus.contrib.django.project import project_bus_class
from eventbus.contrib.flask import EventBusExtension, EventBusState, current_bus
from eventbus.testing import RecordingBus

from _servers import free_port

PROJECT = Path(__file__).parent / "django_project"
REPO = Path(__file__).parent.parent
RECORDING = "eventbus.testing.RecordingBus"


@pytest.fixture
def silent_port() -> Iterator[tuple[str, socket.socket]]:
    """A Redis URL whose port listens but is never served: any connection attempt
    to it is queued in the backlog, where the test can see it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0", sock
    finally:
        sock.close()


def _nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """``make_app(config)``: apps of the test app factory, their buses closed at teardown."""
    apps: list[Flask] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Flask:
        app = _flask_app.create_app(config, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        _flask_app.events.close(app)


# -- Flask ----------------------------------------------------------------------------------


def test_flask_route_publish_is_recorded_and_drain_runs_the_handlers(
    make_app: Callable[..., Flask], silent_port: tuple[str, socket.socket]
) -> None:
    """With EVENTBUS_BUS_CLASS = RecordingBus, a test-client request's publish is recorded,
    the extension's handler runs on drain() in the app context, and the Redis the URL
    names is never contacted."""
    url, sock = silent_port
    app = make_app({"TESTING": True, "EVENTBUS_URL": url, "EVENTBUS_BUS_CLASS": RECORDING})
    client = app.test_client()

    response = client.post("/publish/app.ping", json={"n": 1})

    assert response.status_code == 200
    bus = _flask_app.events.get_bus(app)
    assert isinstance(bus, RecordingBus)
    event = bus.assert_published("app.ping", where={"n": 1}, count=1)
    assert event.id == response.json["id"]
    assert event.source == "flask-test"
    bus.assert_not_published("app.pong")  # handlers wait for drain()
    assert bus.drain() == 1
    # answer_ping ran in the app context: current_app and current_bus worked in it.
    pong = bus.assert_published("app.pong", count=1)
    assert pong.data["app"] == app.name
    assert pong.data["ping"] == {"n": 1}
    with app.app_context():
        assert current_bus.client_id == bus.client_id  # the proxy gives the same bus
        current_bus.assert_published("app.*", count=2)
    assert _nobody_connected(sock)
    assert isinstance(app.extensions["eventbus"], EventBusState)
    assert app.extensions["eventbus"].bus_class is RecordingBus


def test_flask_bus_class_as_a_class_from_env_and_with_a_whole_config(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key takes the class itself, a path from FLASK_EVENTBUS_BUS_CLASS
    (from_prefixed_env), and goes with EVENTBUS_CONFIG; the default stays EventBus."""
    as_class = make_app({"EVENTBUS_BUS_CLASS": RecordingBus}, name="as-class")
    assert type(_flask_app.events.get_bus(as_class)) is RecordingBus

    monkeypatch.setenv("FLASK_EVENTBUS_BUS_CLASS", "eventbus.testing:RecordingBus")
    from_env = make_app(name="from-env")
    assert type(_flask_app.events.get_bus(from_env)) is RecordingBus
    monkeypatch.delenv("FLASK_EVENTBUS_BUS_CLASS")

    config = EventBusConfig(service_name="whole", url="memory://")
    whole = Flask("whole")
    whole.config.update(EVENTBUS_CONFIG=config, EVENTBUS_BUS_CLASS=RECORDING)
    events = EventBusExtension(whole)
    try:
        bus = events.get_bus(whole)
        assert isinstance(bus, RecordingBus)
        assert bus.config is config
    finally:
        events.close(whole)

    plain = make_app({"EVENTBUS_URL": "memory://"}, name="plain")
    assert plain.extensions["eventbus"].bus_class is EventBus
    assert not plain.extensions["eventbus"].is_connected()  # init_app made no bus


def test_flask_each_app_and_each_close_gets_a_fresh_recording_bus(
    make_app: Callable[..., Flask],
) -> None:
    """Two apps record apart; events.close(app) drops the bus, the next use makes a new
    one (what a per-test app fixture relies on)."""
    first = make_app({"EVENTBUS_BUS_CLASS": RECORDING}, name="first")
    second = make_app({"EVENTBUS_BUS_CLASS": RECORDING}, name="second")
    first.test_client().post("/publish/order.created", json={"id": 1})
    one = _flask_app.events.get_bus(first)
    two = _flask_app.events.get_bus(second)
    assert isinstance(one, RecordingBus)
    assert isinstance(two, RecordingBus)
    one.assert_published("order.created", count=1)
    two.assert_not_published()

    _flask_app.events.close(first)
    assert not one.is_connected()
    again = _flask_app.events.get_bus(first)
    assert isinstance(again, RecordingBus)
    assert again is not one
    again.assert_not_published()


def test_flask_recording_bus_reports_handler_failures_to_the_extensions_hooks() -> None:
    """A failing extension handler: drain() raises HandlerError with the cause, and the
    extension's on_error hooks got it, as on a real bus."""
    events = EventBusExtension()
    seen: list[tuple[str, str | None]] = []

    @events.on("photo.uploaded")
    def broken(event: Event) -> None:
        raise ValueError(f"cannot handle {event.data['id']}")

    @events.on_error
    def hook(error: Exception, event: Event | None) -> None:
        seen.append((type(error).__name__, event.type if event else None))

    app = Flask("hooks")
    app.config["EVENTBUS_BUS_CLASS"] = RECORDING
    events.init_app(app)
    try:
        bus = events.get_bus(app)
        assert isinstance(bus, RecordingBus)
        bus.publish("photo.uploaded", {"id": 7})
        with pytest.raises(HandlerError) as info:
            bus.drain()
        assert isinstance(info.value.__cause__, ValueError)
        assert seen == [("HandlerError", "photo.uploaded")]
    finally:
        events.close(app)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("eventbus.testing.NoSuchBus", "cannot import"),
        ("no_such_module.Bus", "cannot import"),
        ("collections.OrderedDict", "must be EventBus or a subclass"),
        (dict, "must be EventBus or a subclass"),
        (RecordingBus(), "must be EventBus or a subclass"),  # an instance, not a class
        (42, "must be EventBus or a subclass"),
    ],
)
def test_flask_bad_bus_class_is_a_configuration_error_at_init_app(value: Any, message: str) -> None:
    """A path that does not import, or anything but an EventBus subclass, fails init_app
    with ConfigurationError naming the key; the app gets no extension."""
    app = Flask("bad")
    app.config["EVENTBUS_BUS_CLASS"] = value
    with pytest.raises(ConfigurationError, match=message) as info:
        EventBusExtension().init_app(app)
    assert "EVENTBUS_BUS_CLASS" in str(info.value)
    assert "eventbus" not in app.extensions


# -- Django ---------------------------------------------------------------------------------


def test_django_bus_class_setting_is_read_and_implies_in_process_handlers() -> None:
    """BUS_CLASS takes a path or a class; for a RecordingBus HANDLE_IN_PROCESS defaults
    to True (an explicit False wins); the default is EventBus without handlers."""
    recording = read_settings({"URL": "memory://", "BUS_CLASS": RECORDING})
    assert recording.bus_class is RecordingBus
    assert (recording.handle_in_process, recording.records) == (True, True)
    explicit = read_settings(
        {"URL": "memory://", "BUS_CLASS": RecordingBus, "HANDLE_IN_PROCESS": False}
    )
    assert (explicit.bus_class, explicit.handle_in_process) == (RecordingBus, False)
    plain = read_settings({"URL": "memory://"})
    assert (plain.bus_class, plain.handle_in_process, plain.records) == (EventBus, False, False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("eventbus.testing.NoSuchBus", "BUS_CLASS: cannot import"),
        ("collections.OrderedDict", "BUS_CLASS must be EventBus or a subclass"),
        (dict, "BUS_CLASS must be EventBus or a subclass"),
    ],
)
def test_django_bad_bus_class_is_improperly_configured(value: Any, message: str) -> None:
    """A BUS_CLASS that does not import or is no EventBus subclass: ImproperlyConfigured."""
    with pytest.raises(ImproperlyConfigured, match=message):
        read_settings({"URL": "memory://", "BUS_CLASS": value})


def test_django_project_bus_class_is_both_django_bus_and_the_chosen_class() -> None:
    """The project's bus class for RecordingBus is one cached class that is a
    DjangoEventBus and a RecordingBus; EventBus gives DjangoEventBus itself."""
    combined = project_bus_class(RecordingBus)
    assert combined is project_bus_class(RecordingBus)
    assert issubclass(combined, DjangoEventBus)
    assert issubclass(combined, RecordingBus)
    assert combined.__name__ == "DjangoRecordingBus"
    assert project_bus_class(EventBus) is DjangoEventBus
    assert project_bus_class(combined) is combined


def test_django_project_bus_class_refuses_a_class_that_is_no_django_bus() -> None:
    """Another EventBus subclass has no project bus class (none is made at run time): it
    is ImproperlyConfigured, naming DjangoEventBus; a DjangoEventBus subclass is used as
    it is."""

    class OwnBus(EventBus):
        pass

    class OwnDjangoBus(DjangoEventBus):
        pass

    with pytest.raises(ImproperlyConfigured, match=r"is not a DjangoEventBus: derive it from"):
        project_bus_class(OwnBus)
    assert project_bus_class(OwnDjangoBus) is OwnDjangoBus


def _django_env(eventbus: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TESTPROJECT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    env["TESTPROJECT_EVENTBUS"] = json.dumps(eventbus)
    env.update(extra)
    return env


def test_django_user_tests_assert_publish_on_commit_on_a_recording_bus(tmp_path: Path) -> None:
    """`manage.py test photos` (photos/tests.py, a user's own TestCase and
    TransactionTestCase): committed uploads are recorded after the commit, rolled-back
    ones never, drain() runs the declared handlers of every app in the test's thread
    and transaction. The project's URL is a Redis port where nothing listens. The test
    database is a file (an in-memory SQLite connection ignores close(), which would hide
    a handler closing the test's connection)."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "manage.py", "test", "photos", "-v", "2", "--noinput"],
        cwd=PROJECT,
        env=_django_env(
            {"URL": dead, "OPERATION_TIMEOUT": 1},
            TESTPROJECT_TEST_DB=str(tmp_path / "test.sqlite3"),
        ),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Ran 7 tests" in output, output
    passed = {line.split(" ", 1)[0] for line in output.splitlines() if line.endswith(" ... ok")}
    assert {
        "test_a_committed_upload_is_recorded_after_the_commit",
        "test_a_rolled_back_upload_is_not_recorded",
        "test_drain_runs_the_declared_handlers_of_every_app",
        "test_a_drained_handler_uses_the_orm_in_the_tests_transaction",
        "test_committed_is_recorded_and_rolled_back_is_not",
    } <= passed, output


def test_django_worker_refuses_a_recording_bus() -> None:
    """eventbus_worker on a recording bus would handle nothing: it says so and exits 1."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "manage.py", "eventbus_worker"],
        cwd=PROJECT,
        env=_django_env({"URL": "memory://", "BUS_CLASS": RECORDING}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RecordingBus, a recording bus for tests" in proc.stderr
