"""eventbus.contrib.django with real Django (SQLite) and a real Redis server.

Django's settings are process-wide, so everything that sets Django up runs in a
process of its own: ``tests/django_project/scenarios.py`` (views through the test
client, transactions) and ``manage.py eventbus_worker``. The subscribers that check
what was sent run here, on buses of their own on the same Redis. Only reading
``settings.EVENTBUS`` (no Django setup needed) is tested in this process.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from eventbus import (
    ConfigurationError,
    EventBus,
    EventBusConfig,
    InvalidFilterError,
    InvalidPatternError,
    ValidationError,
)
from eventbus.contrib.django import DjangoEventBus
from eventbus.contrib.django.conf import config_from_settings, read_settings

from _helpers import Recorder, wait_for
from _servers import free_port

PROJECT = Path(__file__).parent / "django_project"
REPO = Path(__file__).parent.parent
PREFIX = "dj:"


def _env(eventbus: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TESTPROJECT_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
    env["TESTPROJECT_EVENTBUS"] = json.dumps(eventbus)
    env.update(extra)
    return env


def _scenario(name: str, eventbus: dict[str, Any], **extra: str) -> dict[str, Any]:
    """Run one scenario of scenarios.py in a fresh process; return what it observed."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "scenarios.py", name],
        cwd=PROJECT,
        env=_env(eventbus, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return result


def _dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def subscriber(redis_url: str) -> Iterator[tuple[EventBus, Recorder]]:
    """A bus of the test on the project's Redis and prefix, recording every event
    (also those to user alice) until a ``test.done`` sentinel."""
    bus = EventBus.from_url(f"{redis_url}?key_prefix={PREFIX}", service_name="test-subscriber")
    recorder = Recorder()
    bus.subscribe("*", recorder)  # one FIFO subscription: arrival order is kept
    bus.join_room("user:alice")
    with bus:
        yield bus, recorder


def _until_done(recorder: Recorder) -> list[tuple[str, Any]]:
    wait_for(lambda: "test.done" in recorder.types, timeout=30, what="the test.done sentinel")
    return [(e.type, e.data) for e in recorder.events if e.type != "test.done"]


# -- settings.EVENTBUS --------------------------------------------------------------------


def test_settings_map_onto_the_bus_config() -> None:
    """URL, SERVICE_NAME, KEY_PREFIX, scalar fields and nested dicts reach EventBusConfig."""
    options = read_settings(
        {
            "URL": "redis://:pw@redis.internal:6380/2",
            "SERVICE_NAME": "photo-api",
            "KEY_PREFIX": "photos:",
            "PUBLISH_TIMEOUT": 0.5,
            "HANDLER_THREADS": 4,
            "REDIS": {"SOCKET_TIMEOUT": 1.5},
            "PERFORMANCE": {"BATCH_SIZE": 50},
            "HANDLE_IN_PROCESS": True,
            "HANDLER_MODULE": "handlers",
        },
        default_service_name="mysite",
    )
    config = options.config
    assert config.service_name == "photo-api"
    assert config.redis is not None
    assert (config.redis.host, config.redis.port, config.redis.db) == ("redis.internal", 6380, 2)
    assert config.redis.password == "pw"
    assert config.redis.key_prefix == "photos:"
    assert config.redis.socket_timeout == 1.5
    assert config.publish_timeout == 0.5
    assert config.handler_threads == 4
    assert config.performance.batch_size == 50
    assert options.handle_in_process is True
    assert options.handler_module == "handlers"
    # Defaults: the service is named after the project, handlers only in the worker.
    plain = read_settings({"URL": "memory://"}, default_service_name="mysite")
    assert plain.config.service_name == "mysite"
    assert plain.config.transport_url == "memory://"
    assert (plain.handle_in_process, plain.handler_module) == (False, "events")
    # KEY_PREFIX and REDIS refine a Redis URL; a memory:// test setting may keep them.
    memory = config_from_settings({"URL": "memory://", "KEY_PREFIX": "x:", "REDIS": {}})
    assert memory == EventBusConfig(service_name="django", url="memory://")


@pytest.mark.parametrize(
    ("value", "message", "cause"),
    [
        (None, "must be a dict", None),
        ({}, "URL is required", None),
        ({"URL": "memory://", "URLL": "x"}, "unknown key(s) URLL", None),
        ({"URL": "memory://", "url": "x"}, "unknown key(s) url", None),
        ({"URL": "ftp://host"}, "url: must be one of memory://", ConfigurationError),
        ({"URL": "redis://h:99999/0"}, "invalid port", ConfigurationError),
        ({"URL": "memory://", "PUBLISH_TIMEOUT": -1}, "publish_timeout", ConfigurationError),
        ({"URL": "memory://", "SERVICE_NAME": "a b"}, "service_name", ConfigurationError),
        ({"URL": "memory://", "OVERFLOW": "drop"}, "overflow", ConfigurationError),
        ({"URL": "redis://h/0", "KEY_PREFIX": "bad prefix"}, "key_prefix", ConfigurationError),
        ({"URL": "redis://h/0", "REDIS": {"TIMEOUT": 1}}, "REDIS['TIMEOUT']", None),
        ({"URL": "memory://", "PERFORMANCE": 5}, "PERFORMANCE must be a dict", None),
        ({"URL": "memory://", "PERFORMANCE": {"BATCH_SIZE": 0}}, "batch_size", ConfigurationError),
        ({"URL": "memory://", "HANDLE_IN_PROCESS": "yes"}, "HANDLE_IN_PROCESS", None),
        ({"URL": "memory://", "HANDLER_MODULE": "my.events"}, "HANDLER_MODULE", None),
    ],
)
def test_bad_settings_are_improperly_configured(
    value: Any, message: str, cause: type[Exception] | None
) -> None:
    """Each mistake is ImproperlyConfigured naming settings.EVENTBUS and the key."""
    with pytest.raises(ImproperlyConfigured) as info:
        read_settings(value)
    assert str(info.value).startswith("settings.EVENTBUS: ")
    assert message in str(info.value)
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


def test_bad_settings_stop_django_startup() -> None:
    """django.setup() fails on a bad EVENTBUS, before any handler module is imported."""
    code = "import django, sys; django.setup(); print('started')"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=PROJECT,
        env=_env({"URL": "memory://", "PUBLISH_TIMEOUT": 0}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "started" not in proc.stdout
    assert "ImproperlyConfigured: settings.EVENTBUS: publish_timeout" in proc.stderr


def test_importing_the_integration_needs_no_settings_and_eventbus_no_django() -> None:
    """`import eventbus` loads no Django; the contrib module imports without settings."""
    code = (
        "import sys, eventbus; assert 'django' not in sys.modules, 'eventbus imported django'; "
        "from eventbus.contrib.django import bus, publish_on_commit; print(repr(bus))"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "proxy" in proc.stdout


# -- declared handlers ---------------------------------------------------------------------


def test_on_checks_arguments_at_declaration_without_subscribing() -> None:
    """@bus.on on the project's bus raises for a bad pattern or filter at once, and in a
    process that runs no handlers subscribes nothing (needs no Django setup)."""
    bus = DjangoEventBus(EventBusConfig(service_name="t", url="memory://declare-test"))
    before = len(bus.declared_handlers)
    with pytest.raises(InvalidPatternError):
        bus.on("photo uploaded")(print)
    with pytest.raises(InvalidFilterError):
        bus.on("photo.*", filter={"conditions": [{"field": "x", "operator": "nope"}]})(print)
    with pytest.raises(ValidationError):
        bus.on("photo.*", concurrency=0)(print)
    assert len(bus.declared_handlers) == before
    assert bus.subscriptions() == []
    assert bus.handling is False
    assert bus.is_connected() is False


# -- startup and autodiscovery ------------------------------------------------------------


def test_startup_autodiscovers_handlers_and_connects_nothing() -> None:
    """Both apps' events.py are imported at startup: their handlers are declared (not
    subscribed in a web process), and nothing connects: the Redis it names is down."""
    result = _scenario("startup", {"URL": _dead_redis(), "KEY_PREFIX": PREFIX})
    assert result["declared"] == [
        ["photo.uploaded", "photos.events.announce_thumbnail", None],
        ["job.*", "photos.events.run_job", "jobs"],
        ["photo.uploaded", "notifications.events.notify_owner", None],
    ]
    assert result["connected"] is False
    assert result["handling"] is False
    assert result["subscriptions"] == 0
    assert result["service_name"] == "testproject"  # from DJANGO_SETTINGS_MODULE
    assert result["key_prefix"] == PREFIX
    assert result["proxy_is_bus"] is True


def test_in_process_handlers_run_in_the_web_process() -> None:
    """HANDLE_IN_PROCESS subscribes the declared handlers in every process."""
    result = _scenario("in_process", {"URL": "memory://in-process", "HANDLE_IN_PROCESS": True})
    assert result["handling"] is True
    assert result["connected"] is False  # still lazy
    assert result["subscriptions"] == ["job.*", "photo.uploaded", "photo.uploaded"]
    assert result["handled"] == 1


def test_each_forked_process_connects_on_its_first_publish(
    redis_url: str, subscriber: tuple[EventBus, Recorder]
) -> None:
    """A pre-forking master that never publishes stays unconnected; each forked worker
    connects on its own first publish (its own client id)."""
    _, recorder = subscriber
    result = _scenario("prefork", {"URL": redis_url, "KEY_PREFIX": PREFIX})
    assert result["codes"] == [0, 0]
    assert result["master_connected"] is False
    events = recorder.wait(2, timeout=20)
    assert sorted(e.data["pid"] for e in events) == sorted(result["children"])
    assert len({e.data["client"] for e in events}) == 2


# -- views and transactions ---------------------------------------------------------------


def test_views_publish_and_a_subscriber_receives(
    redis_url: str, subscriber: tuple[EventBus, Recorder]
) -> None:
    """A view publishes at once; an upload view publishes on commit, not after its
    rollback (HTTP 500); the bus connected on the first publish."""
    _, recorder = subscriber
    result = _scenario("views", {"URL": redis_url, "KEY_PREFIX": PREFIX})
    received = _until_done(recorder)
    assert result["connected_before"] is False
    assert result["ping"][0] == 200
    assert result["ok"][0] == 201
    assert result["failed"] == 500
    assert result["titles"] == ["sunset"]  # the failed upload was rolled back
    photo_id = result["ok"][1]["photoId"]
    assert received == [
        ("site.pinged", {"path": "/ping/"}),
        ("photo.uploaded", {"photoId": photo_id, "title": "sunset", "owner": "alice"}),
    ]
    assert recorder.events[0].id == result["ping"][1]["eventId"]


def test_publish_on_commit_sends_committed_events_only(
    redis_url: str, subscriber: tuple[EventBus, Recorder]
) -> None:
    """After the outermost commit, never after a rollback or a rolled-back savepoint,
    at once in autocommit; bad input raises at the call; data is copied at the call."""
    _, recorder = subscriber
    result = _scenario("on_commit", {"URL": redis_url, "KEY_PREFIX": PREFIX})
    received = _until_done(recorder)
    assert received == [
        ("order.committed", {"n": 1}),
        ("order.committed", {"n": 2}),
        ("order.committed", {"n": 3}),
        ("order.outer", {"n": 1}),
        ("order.autocommit", {"n": 1}),
    ]
    user_events = [e for e in recorder.events if e.type == "order.autocommit"]
    assert [e.user for e in user_events] == ["alice"]
    assert result["inside_atomic"] == 0
    assert result["after_commit"] == 3
    assert result["after_rollbacks"] == 4
    assert result["after_autocommit"] == 5  # sent before the call returned
    assert result["errors"] == ["InvalidNameError", "SerializationError"]
    assert result["after_errors"] == 5


def test_a_failed_publish_after_commit_is_logged_and_signalled() -> None:
    """Redis down at commit: the commit succeeds, nothing raises, the failure is logged
    with its traceback and sent as publish_failed, later on_commit callbacks run."""
    dead = {"URL": _dead_redis(), "OPERATION_TIMEOUT": 1}
    result = _scenario(
        "on_commit_failure", {"URL": "memory://"}, TESTPROJECT_DEAD_EVENTBUS=json.dumps(dead)
    )
    assert result["raised"] is None
    assert result["signalled"] == [
        {
            "sender": "DjangoEventBus",
            "event_type": "order.lost",
            "data": {"n": 1},
            "user_id": "alice",
            "error": "TransportConnectionError",
        }
    ]
    assert len(result["logged"]) == 1
    assert (
        "order.lost to user alice was not sent after its transaction committed"
        in (result["logged"][0])
    )
    assert result["logged_with_traceback"] == [True]
    assert result["later_callbacks"] == ["ran"]


# -- the worker command -------------------------------------------------------------------


class _Worker:
    """``manage.py eventbus_worker`` as a real process: stdout lines, stderr in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[str] = log_path.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error", "manage.py", "eventbus_worker", "--stop-timeout", "30"],
            cwd=PROJECT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_ready(self) -> str:
        try:
            line = self.lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"worker not ready: {self.log()}") from None
        assert "ready" in line, line + self.log()
        return line

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        return self.proc.wait(timeout=40)

    def close(self) -> None:
        """Kill the worker if it still runs (the test failed), close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._log.close()


def _job_runs(db: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(db, timeout=10) as conn:
        return list(conn.execute("SELECT job, state, pid FROM photos_jobrun ORDER BY id"))


def test_worker_command_handles_events_and_stops_gracefully(
    tmp_path: Path, redis_url: str, subscriber: tuple[EventBus, Recorder]
) -> None:
    """SIGTERM while a group handler runs: it finishes and is acknowledged, unread events
    stay in the group, exit 0; the next run handles the rest: each job exactly once.
    The autodiscovered fan-out handlers of both apps run in the worker too."""
    test_bus, recorder = subscriber
    db, hold = tmp_path / "db.sqlite3", tmp_path / "hold"
    env = _env(
        {"URL": redis_url, "KEY_PREFIX": PREFIX, "SERVICE_NAME": "photo-worker"},
        TESTPROJECT_DB=str(db),
        TESTPROJECT_HOLD=str(hold),
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v", "0"],
        cwd=PROJECT,
        env=env,
        check=True,
        timeout=60,
    )
    jobs = 5

    first = _Worker(env, tmp_path / "worker1.log")
    try:
        assert "photo-worker ready: 3 handler(s)" in first.wait_ready()
        hold.touch()  # the first job waits until the worker was told to stop
        publisher = EventBus.from_url(f"{redis_url}?key_prefix={PREFIX}", service_name="shop")
        with publisher:  # connects after the worker registered the group: routes to it
            for job in range(jobs):
                publisher.publish("job.run", {"job": job})
        wait_for(lambda: len(_job_runs(db)) == 1, timeout=20, what="the first job to start")
        assert _job_runs(db)[0][1] == "started"
        first.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "warm shutdown" in first.log(), timeout=20, what="the warm shutdown")
        hold.unlink()
        assert first.wait() == 0, first.log()
    finally:
        first.close()
    first_runs = _job_runs(db)
    assert 1 <= len(first_runs) < jobs  # stopped with events left in the group
    assert all(state == "done" for _, state, _ in first_runs)  # the in-flight one finished
    assert "stopped cleanly" in first.log()

    second = _Worker(env, tmp_path / "worker2.log")
    try:
        second.wait_ready()
        test_bus.publish("photo.uploaded", {"photoId": 7, "title": "dawn", "owner": "alice"})
        wait_for(
            lambda: len(_job_runs(db)) == jobs and all(r[1] == "done" for r in _job_runs(db)),
            timeout=30,
            what="every job to be handled",
        )
        wait_for(
            lambda: {"photo.thumbnail.ready", "notification.new"} <= set(recorder.types),
            timeout=20,
            what="the worker's fan-out handlers",
        )
        assert second.stop(signal.SIGINT) == 0, second.log()
    finally:
        second.close()
    runs = _job_runs(db)
    assert sorted(job for job, _, _ in runs) == list(range(jobs))  # each exactly once
    assert runs[: len(first_runs)] == first_runs
    assert {pid for _, _, pid in first_runs} == {first.proc.pid}
    assert {pid for _, _, pid in runs[len(first_runs) :]} == {second.proc.pid}
    notification = next(e for e in recorder.events if e.type == "notification.new")
    assert (notification.user, notification.data) == ("alice", {"photoId": 7})
    assert notification.source == "photo-worker"
    log = second.log()
    assert "handled photo.uploaded" in log
    assert "handled job.run" in log
    assert "stopped cleanly" in log


def test_worker_command_refuses_to_run_without_handlers() -> None:
    """With autodiscovery off nothing is declared: the command says so and exits 1."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "manage.py", "eventbus_worker"],
        cwd=PROJECT,
        env=_env({"URL": "memory://", "HANDLER_MODULE": None}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "no handlers to run" in proc.stderr
