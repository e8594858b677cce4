"""The ``eventbus`` command: in-process through ``main()``, and ``listen`` as a subprocess."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventbus import CheckResult, EventBus, HealthCheckResult, PerformanceConfig
from eventbus.cli import main

from _helpers import Recorder, wait_for

BusFactory = Callable[..., EventBus]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(redis_url: str) -> str:
    """The session Redis, under a key prefix of this test's own."""
    return f"{redis_url}?key_prefix=cli{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def memory_url() -> str:
    """A memory:// broker of this test's own."""
    return f"memory://cli-{uuid.uuid4().hex[:8]}"


def _factory(url: str) -> Iterator[BusFactory]:
    buses: list[EventBus] = []

    def make(service_name: str = "spy", **options: Any) -> EventBus:
        options.setdefault("performance", PerformanceConfig(retry_delay=0.01))
        bus = EventBus.from_url(url, service_name=service_name, **options)
        buses.append(bus)
        bus.connect()
        return bus

    yield make
    for bus in buses:
        bus.disconnect(timeout=2.0)


@pytest.fixture
def make_bus(url: str) -> Iterator[BusFactory]:
    """Connected buses on the test's Redis prefix, disconnected at teardown."""
    yield from _factory(url)


@pytest.fixture
def make_memory_bus(memory_url: str) -> Iterator[BusFactory]:
    """Connected buses on the test's memory:// broker, disconnected at teardown."""
    yield from _factory(memory_url)


@pytest.fixture
def unreachable_url() -> str:
    """A Redis URL with a password on a loopback port nobody listens on, short timeouts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://:hunter2@127.0.0.1:{port}/0?socket_connect_timeout=0.5&socket_timeout=0.5"


def _cli_buses(bus: EventBus) -> list[str]:
    return [c.client_id for c in bus.get_clients() if c.service_name == "eventbus-cli"]


# -- publish -------------------------------------------------------------------------------


def test_publish_reaches_subscriber_and_prints_id_and_receivers(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish sends TYPE with JSON DATA and headers, and prints the event id and receivers."""
    spy = Recorder()
    make_bus().subscribe("photo.*", spy)
    code = main(
        [
            "--url",
            url,
            "publish",
            "photo.uploaded",
            '{"photoId": "123", "size": 5}',
            "--header",
            "traceparent=00-ab-cd-01",
            "--header",
            "x-correlation=a=b",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    (event,) = spy.wait(1)
    assert event.type == "photo.uploaded"
    assert event.data == {"photoId": "123", "size": 5}
    assert event.source == "eventbus-cli"
    assert event.headers == {"traceparent": "00-ab-cd-01", "x-correlation": "a=b"}
    assert event.id in out
    assert "1 receiver(s)" in out


def test_publish_json_prints_the_publish_result(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish --json prints the PublishResult as one JSON object; --service-name sets source."""
    spy = Recorder()
    make_bus().subscribe("order.*", spy)
    assert main(["--url", url, "--service-name", "billing", "publish", "--json", "order.paid"]) == 0
    result = json.loads(capsys.readouterr().out)
    (event,) = spy.wait(1)
    assert result["event_id"] == event.id
    assert result["receivers"] == 1
    assert result["event_type"] == "order.paid"
    assert result["channel"].endswith("order.paid")
    assert event.data is None
    assert event.source == "billing"


@pytest.mark.parametrize(
    ("option", "room", "user", "broadcast"),
    [
        (["--room", "photo:123"], "photo:123", None, False),
        (["--user", "user-456"], "user:user-456", "user-456", False),
        (["--broadcast"], None, None, True),
    ],
)
def test_publish_room_user_and_broadcast_options(
    url: str,
    make_bus: BusFactory,
    option: list[str],
    room: str | None,
    user: str | None,
    broadcast: bool,
) -> None:
    """--room, --user and --broadcast publish through publish_to_room / _to_user / broadcast."""
    spy = Recorder()
    bus = make_bus()
    bus.join_room("photo:123")
    bus.join_room("user:user-456")
    bus.subscribe("processing.*", spy)
    assert main(["--url", url, "publish", "processing.update", '{"progress": 50}', *option]) == 0
    (event,) = spy.wait(1)
    assert (event.room, event.user, event.broadcast) == (room, user, broadcast)
    assert event.data == {"progress": 50}


def test_publish_dash_reads_data_from_stdin(
    url: str, make_bus: BusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DATA '-' reads the JSON payload from stdin."""
    spy = Recorder()
    make_bus().subscribe("*", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"from": "stdin", "n": [1, 2]}\n'))
    assert main(["--url", url, "publish", "photo.imported", "-"]) == 0
    assert spy.wait(1)[0].data == {"from": "stdin", "n": [1, 2]}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["publish", "photo.uploaded", "{bad json"], "", "DATA is not valid JSON"),
        (["publish", "photo.uploaded", "-"], "not json", "stdin is not valid JSON"),
        (["publish", "photo uploaded", "{}"], "", "invalid event type"),
        (["publish", "photo.uploaded", "{}", "--room", "bad room"], "", "invalid room"),
        (["publish", "photo.uploaded", "{}", "--user", "a/b"], "", "invalid user id"),
        (["publish", "photo.uploaded", "--header", "no-equals"], "", "expected K=V"),
        (["publish", "photo.uploaded", "--room", "r", "--broadcast"], "", "not allowed with"),
    ],
)
def test_bad_input_exits_2_and_sends_nothing(
    url: str,
    make_bus: BusFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    stdin: str,
    message: str,
) -> None:
    """Bad JSON, names or options: exit 2, the reason on stderr, nothing on stdout, no event."""
    spy = Recorder()
    bus = make_bus()
    bus.join_room("r")
    bus.subscribe("*", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(["--url", url, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    bus.publish("marker")
    spy.wait(1)
    assert spy.types == ["marker"]


def test_bad_input_exits_2_before_connecting(
    unreachable_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input is reported as bad input (2), not as a connection failure, without I/O."""
    assert main(["--url", unreachable_url, "publish", "bad type!", "{}"]) == 2
    assert main(["--url", unreachable_url, "members", "bad room"]) == 2
    assert main(["--url", unreachable_url, "listen", "bad pattern"]) == 2
    err = capsys.readouterr().err
    assert "cannot connect" not in err
    assert len(err.splitlines()) == 3


def test_invalid_configuration_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown URL scheme or an invalid --service-name exits 2 with a one-line reason."""
    assert main(["--url", "nosuch://x", "health"]) == 2
    assert main(["--service-name", "bad name", "--url", "memory://", "health"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "nosuch://" in err[0]
    assert "service_name" in err[1]


# -- unreachable server --------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "photo.uploaded", "{}"],
        ["listen", "--timeout", "5"],
        ["members", "photo:1"],
        ["health"],
        ["stats"],
        ["demo", "--speed", "0"],
    ],
)
def test_unreachable_url_exits_3_quickly_with_masked_url(
    unreachable_url: str, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A server that refuses connections: exit 3 within seconds, one line naming the URL
    with its password masked."""
    started = time.monotonic()
    assert main(["--url", unreachable_url, *command]) == 3
    assert time.monotonic() - started < 5.0
    lines = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("eventbus: cannot connect")
    ]
    assert len(lines) == 1
    assert "redis://:***@127.0.0.1:" in lines[0]
    assert "hunter2" not in lines[0]


# -- listen --------------------------------------------------------------------------------


class _Listener:
    """``python -m eventbus ... listen`` in a subprocess, its stderr read by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventbus", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stderr: list[str] = []
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.stderr_lines.put(line)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for the 'listening' line it prints once its subscription is live."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"listen never became ready: {self.stderr}")
            try:
                line = self.stderr_lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            self.stderr.append(line)
            if line.startswith("eventbus: listening for"):
                return

    def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        """Wait for it to exit; its exit code, stdout and full stderr."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        while True:
            try:
                self.stderr.append(self.stderr_lines.get_nowait())
            except queue.Empty:
                break
        return code, out, "".join(self.stderr)

    def kill(self) -> None:
        """Stop it if a test failed half-way."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def listener() -> Iterator[Callable[..., _Listener]]:
    """Start ``eventbus listen`` subprocesses; any still running at teardown is killed."""
    started: list[_Listener] = []

    def start(*args: str) -> _Listener:
        started.append(_Listener(*args))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()


def test_listen_subprocess_prints_a_published_event_as_json(
    url: str, make_bus: BusFactory, listener: Callable[..., _Listener]
) -> None:
    """`python -m eventbus listen --count 1 --json` prints the event as one JSON line, exits 0."""
    proc = listener("--url", url, "listen", "photo.*", "--count", "1", "--json", "--timeout", "30")
    proc.wait_ready()
    result = make_bus("photo-api").publish(
        "photo.processing.completed", {"photoId": "123", "size": 2}, headers={"k": "v"}
    )
    code, out, err = proc.finish()
    assert code == 0, err
    (line,) = out.splitlines()
    doc = json.loads(line)
    assert doc["id"] == result.event_id
    assert doc["type"] == "photo.processing.completed"
    assert doc["source"] == "photo-api"
    assert doc["data"] == {"photoId": "123", "size": 2}
    assert doc["headers"] == {"k": "v"}
    assert doc["room"] is None
    assert doc["user"] is None
    sent_at = dt.datetime.fromisoformat(doc["time"])
    assert sent_at.utcoffset() == dt.timedelta(0)
    assert abs(sent_at.timestamp() - time.time()) < 60
    assert "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_listen_subprocess_exits_0_on_signal_and_disconnects(
    url: str, make_bus: BusFactory, listener: Callable[..., _Listener], signum: int
) -> None:
    """Ctrl-C or SIGTERM stops listen with exit 0, no traceback, its bus unregistered."""
    if signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this process, so the child would inherit that")
    watcher = make_bus("watcher")
    proc = listener("--url", url, "listen", "--room", "photo:1")
    proc.wait_ready()
    assert len(watcher.get_room_members("photo:1")) == 1  # joined before the ready line
    wait_for(lambda: _cli_buses(watcher), what="the listen bus's first heartbeat")
    proc.proc.send_signal(signum)
    code, _, err = proc.finish()
    assert code == 0, err
    assert "Traceback" not in err
    assert _cli_buses(watcher) == []
    assert watcher.get_room_members("photo:1") == []


def test_listen_in_process_prints_readable_lines(
    memory_url: str, make_memory_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default format shows time, type, source, room or broadcast, and compact data."""
    codes: list[int] = []
    thread = threading.Thread(
        target=lambda: codes.append(
            main(["--url", memory_url, "listen", "--room", "photo:1", "--count", "3"])
        )
    )
    thread.start()
    try:
        bus = make_memory_bus("photo-api")
        wait_for(lambda: bus.get_room_members("photo:1"), what="listen to join its room")
        bus.publish("photo.uploaded", {"photoId": "123", "tags": ["a", "b"]})
        bus.publish_to_room("photo:1", "processing.update", {"progress": 50})
        bus.broadcast("system.maintenance", "tonight")
    finally:
        thread.join(20)
    assert codes == [0]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "photo.uploaded" in lines[0]
    assert "photo-api" in lines[0]
    assert lines[0].endswith('{"photoId":"123","tags":["a","b"]}')
    assert "room=photo:1" in lines[1]
    assert lines[1].endswith('{"progress":50}')
    assert "broadcast" in lines[2]
    assert lines[2].endswith('"tonight"')
    assert all(line[2] == ":" and line[5] == ":" for line in lines)  # HH:MM:SS.mmm


def test_listen_timeout_exits_0_and_1_when_count_not_reached(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--timeout alone exits 0; with --count N unmet by then it exits 1 and says so."""
    assert main(["--url", memory_url, "listen", "--timeout", "0.2"]) == 0
    assert main(["--url", memory_url, "listen", "--timeout", "0.2", "--count", "2"]) == 1
    assert "with 0 of 2 event(s)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args", [["--count", "0"], ["--timeout", "-1"], ["--timeout", "soon"], ["bad pattern"]]
)
def test_listen_bad_arguments_exit_2(
    memory_url: str, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """A non-positive --count or --timeout, or an invalid pattern, exits 2."""
    assert main(["--url", memory_url, "listen", *args]) == 2
    assert capsys.readouterr().out == ""


# -- members, health, stats ----------------------------------------------------------------


def test_members_lists_joined_buses(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """members prints each member id on its own line, or a JSON list with --json."""
    a, b = make_bus("a"), make_bus("b")
    a.join_room("photo:123")
    b.join_room("photo:123")
    make_bus("c").join_room("photo:999")
    assert main(["--url", url, "members", "photo:123"]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == sorted([a.client_id, b.client_id])
    assert main(["--url", url, "members", "--json", "photo:123"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)) == sorted([a.client_id, b.client_id])
    assert main(["--url", url, "members", "--json", "empty"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_default_url_comes_from_the_environment(
    url: str,
    make_bus: BusFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --url the command uses EVENTBUS_URL, as EventBus.from_env() does."""
    make_bus().join_room("env-room")
    monkeypatch.setenv("EVENTBUS_URL", url)
    assert main(["members", "env-room"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_health_exits_0_and_prints_status_uptime_and_checks(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """health prints the status, uptime and each check; --json the whole result."""
    assert main(["--url", url, "health"]) == 0
    out = capsys.readouterr().out
    assert "status:     healthy" in out
    assert "uptime:" in out
    for name in ("transport", "listener", "handlers", "queues"):
        assert f"\n  {name} " in out
    assert "redis ping" in out
    assert main(["--url", url, "health", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "healthy"
    assert doc["service_name"] == "eventbus-cli"
    assert doc["checks"]["transport"]["status"] == "healthy"
    assert isinstance(doc["uptime"], float)


@pytest.mark.parametrize(("status", "code"), [("degraded", 1), ("unhealthy", 2)])
def test_health_exit_code_follows_the_status(
    memory_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: str,
    code: int,
) -> None:
    """health exits 1 when degraded and 2 when unhealthy."""

    def fake(self: EventBus) -> HealthCheckResult:
        check = CheckResult(status=status, detail="made up")  # type: ignore[arg-type]
        return HealthCheckResult(
            status=status,  # type: ignore[arg-type]
            uptime=1.0,
            checks={"transport": check},
            service_name=self.service_name,
            client_id=self.client_id,
            transport=self.config.transport_url,
        )

    monkeypatch.setattr(EventBus, "health_check", fake)
    assert main(["--url", memory_url, "health"]) == code
    assert f"status:     {status}" in capsys.readouterr().out


def test_stats_lists_another_bus_with_its_counters(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """stats shows every other live bus: service, id, host/pid, subscriptions, rooms,
    counters; --json gives the raw records; the command's own bus is left out."""
    worker = make_bus("thumbnailer", heartbeat_interval=0.1, presence_ttl=5.0)
    got = Recorder()
    worker.subscribe("job.*", got)
    worker.join_room("ops")
    for n in range(3):
        worker.publish("job.created", {"n": n})
    got.wait(3)

    def fresh() -> bool:
        records = [c for c in worker.get_clients() if c.client_id == worker.client_id]
        return bool(records) and records[0].stats["events_handled"] == 3

    wait_for(fresh, what="a heartbeat carrying the new counters")
    assert main(["--url", url, "stats"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["SERVICE", "CLIENT", "ID", "HOST/PID"]
    assert "P99 MS" in header
    (row,) = rows
    cells = row.split()
    assert cells[:2] == ["thumbnailer", worker.client_id]
    assert cells[2].endswith(f"/{os.getpid()}")  # HOST/PID
    assert cells[3:5] == ["job.*", "ops"]
    assert cells[5:9] == ["3", "3", "3", "0"]  # published, received, handled, failed

    assert main(["--url", url, "stats", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["client_id"] == worker.client_id
    assert record["service_name"] == "thumbnailer"
    assert record["subscriptions"] == ["job.*"]
    assert record["rooms"] == ["ops"]
    assert record["stats"]["events_published"] == 3
    assert record["pid"] == os.getpid()


def test_stats_without_other_buses_says_so(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With no other bus live, stats prints nothing on stdout and says so on stderr."""
    assert main(["--url", url, "stats"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no other bus is live" in captured.err
    assert main(["--url", url, "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# -- the command itself --------------------------------------------------------------------


def test_help_names_every_command_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and lists the commands and exit codes; no command is a usage error."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("publish", "listen", "members", "health", "stats", "demo"):
        assert command in out
    assert "3 cannot connect" in out
    assert main([]) == 2
    assert main(["stats", "--help"]) == 0
    assert "heartbeat_interval" in capsys.readouterr().out


def test_verbose_logs_to_stderr_and_restores_logging(
    memory_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """-v logs the library at DEBUG on stderr; without it INFO is hidden; logging is
    left as it was."""
    logger = logging.getLogger("eventbus")
    before = (logger.level, logger.propagate, list(logger.handlers))
    assert main(["-v", "--url", memory_url, "health"]) == 0
    assert "connected to memory://" in capsys.readouterr().err
    assert main(["--url", memory_url, "health"]) == 0
    assert "connected to" not in capsys.readouterr().err
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_python_dash_m_runs_the_command() -> None:
    """`python -m eventbus --version` runs the same command."""
    done = subprocess.run(
        [sys.executable, "-m", "eventbus", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("eventbus ")
