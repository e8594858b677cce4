"""The pytest plugin eventbus.testing.pytest_plugin, run the way a user's suite runs it:
in a separate pytest process (pytester), with user code, conftest and settings of its
own, and no Redis server reachable."""

from __future__ import annotations

import ast
import importlib.metadata
import os
from pathlib import Path

import pytest

import eventbus.testing.pytest_plugin as plugin

pytest_plugins = ["pytester"]

PLUGIN = "eventbus.testing.pytest_plugin"

# The user's application: production code builds a Redis-backed bus; its functions
# take the bus as an argument.
APP = """
from eventbus import Event, EventBus


def make_bus() -> EventBus:
    return EventBus.from_url("redis://127.0.0.1:6399/0", service_name="photo-api")


def upload_photo(bus: EventBus, photo_id: str, user_id: str) -> None:
    bus.publish("photo.uploaded", {"photoId": photo_id, "userId": user_id})


def register_handlers(bus: EventBus) -> None:
    @bus.on("photo.uploaded", group="thumbnails")
    def make_thumbnail(event: Event) -> None:
        bus.publish_to_room(
            f"photo:{event.data['photoId']}", "photo.processing.completed", {"progress": 100}
        )
        bus.publish_to_user(event.data["userId"], "notification.new", {"text": "ready"})
"""

# No socket may connect anywhere during the user's tests: a Redis client would fail.
CONFTEST = """
import socket

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(self, address):
        raise AssertionError(f"a test tried to connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
"""

USER_TESTS = """
import socket

import pytest

from eventbus import EventBus
from eventbus.testing import RecordingBus

import photos


def test_upload_publishes_an_event(event_bus):
    photos.upload_photo(event_bus, "123", "user-456")

    event = event_bus.assert_published("photo.uploaded", where={"photoId": "123"})
    assert event.source == "test"
    assert isinstance(event_bus, EventBus) and isinstance(event_bus, RecordingBus)


def test_handlers_run_on_drain(event_bus):
    photos.register_handlers(event_bus)
    photos.upload_photo(event_bus, "123", "user-456")
    event_bus.assert_not_published("notification.*")

    assert event_bus.drain() == 1
    event_bus.assert_published("photo.processing.completed", room="photo:123")
    event_bus.assert_published("notification.new", user="user-456", count=1)


@pytest.mark.event_bus(service_name="photo-api", eager=True)
def test_marker_sets_options(event_bus):
    photos.register_handlers(event_bus)
    photos.upload_photo(event_bus, "9", "user-1")
    event_bus.assert_published("notification.new", user="user-1")  # no drain: eager
    assert {e.source for e in event_bus.published} == {"photo-api"}


def test_factory_makes_independent_buses(event_bus, event_bus_factory):
    other = event_bus_factory(service_name="billing")
    other.publish("invoice.sent")
    event_bus.assert_not_published()
    other.assert_published("invoice.sent")
    assert other.is_connected()


def test_the_network_is_really_off():
    with socket.socket() as sock, pytest.raises(AssertionError, match="tried to connect"):
        sock.connect(("127.0.0.1", 6399))


SEEN = []


def test_each_test_gets_a_fresh_bus_first(event_bus):
    event_bus.publish("photo.uploaded")
    SEEN.append(event_bus)


def test_each_test_gets_a_fresh_bus_second(event_bus):
    assert event_bus.published == []
    assert event_bus is not SEEN[0]
    assert not SEEN[0].is_connected()  # the previous test's bus was closed


def test_a_wrong_expectation_fails(event_bus):
    photos.upload_photo(event_bus, "123", "user-456")
    event_bus.assert_published("photo.deleted")


def test_a_failing_handler_fails_the_test(event_bus):
    event_bus.subscribe("photo.*", lambda event: event.data["missing"])
    photos.upload_photo(event_bus, "123", "user-456")
    event_bus.drain()
"""

INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
"""


def _plugin_args() -> list[str]:
    """``-p`` the plugin unless pytest loads it by itself (its pytest11 entry point,
    once the package declares it): loading it twice would be an error."""
    declared = any(ep.value == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))
    autoload = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    return [] if declared and autoload else ["-p", PLUGIN]


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: app module, conftest that forbids network, tests, pytest.ini."""
    pytester.makepyfile(photos=APP, test_photos=USER_TESTS)
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    return pytester


def test_a_users_suite_asserts_publishes_without_redis(user_project: pytest.Pytester) -> None:
    """Acceptance (issue 5): a user-style suite using the event_bus fixture passes with no
    Redis server reachable; its wrong expectation and failing handler fail, with the
    published events and the handler's error in the report."""
    result = user_project.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(passed=7, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_a_wrong_expectation_fails*",
            "*AssertionError: expected an event matching 'photo.deleted', found 0.",
            "*Published (1):",
            "*1. photo.uploaded {'photoId': '123', 'userId': 'user-456'}",
        ]
    )
    result.stdout.fnmatch_lines(["*KeyError: 'missing'*", "*HandlerError: handler of*"])


def test_the_marker_is_registered_and_checks_its_arguments(pytester: pytest.Pytester) -> None:
    """--strict-markers accepts @pytest.mark.event_bus; positional arguments are refused."""
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.event_bus("photo-api")
        def test_positional(event_bus):
            pass
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args())
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*keyword arguments only*"])
    markers = pytester.runpytest_subprocess(*_plugin_args(), "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.event_bus(**options)*"])


def test_fixture_names_do_not_collide_with_our_conftest() -> None:
    """The plugin will load in our own suite too: its fixtures must not shadow ours."""
    conftest = Path(__file__).with_name("conftest.py")
    ours = {
        node.name
        for node in ast.walk(ast.parse(conftest.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef)
    }
    theirs = set(plugin.__all__)
    assert theirs == {"event_bus", "event_bus_factory"}
    assert theirs.isdisjoint(ours)
