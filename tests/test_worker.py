"""The shared worker runner (:mod:`eventbus.cli._worker`) and ``eventbus worker MODULE[:BUS]``.

In-process tests run :class:`Worker` on ``memory://`` buses; the command's tests run
``python -m eventbus worker tests._worker_app`` as a real process against the test
Redis, with the handlers of ``tests/_worker_app.py`` writing what they did into it.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from eventbus import Event, EventBus, PerformanceConfig
from eventbus._worker import EXIT_OK, EXIT_UNFINISHED, Worker, run_worker
from eventbus.cli import main

from _helpers import Recorder, wait_for

ROOT = Path(__file__).resolve().parent.parent
APP = "tests._worker_app"


def _memory_bus(**options: Any) -> EventBus:
    options.setdefault("performance", PerformanceConfig(retry_delay=0.01))
    return EventBus.from_url(
        f"memory://worker-{uuid.uuid4().hex[:8]}", service_name="worker-test", **options
    )


class _Running:
    """A :class:`Worker` running in a thread, with its result."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.result: list[int | BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result.append(self.worker.run())
        except BaseException as exc:
            self.result.append(exc)

    def join(self, timeout: float = 10.0) -> int | BaseException:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not return"
        return self.result[0]


def _start(bus: EventBus, **options: Any) -> _Running:
    ready = threading.Event()
    running = _Running(Worker(bus, name="test-worker", on_ready=ready.set, **options))
    assert ready.wait(10), "the worker did not become ready"
    return running


@pytest.fixture
def worker_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture ``eventbus.worker`` at INFO."""
    caplog.set_level(logging.INFO, logger="eventbus.worker")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "eventbus.worker"]


# -- the dispatcher's per-event records ----------------------------------------------------


def test_events_logger_gets_one_record_per_outcome(caplog: pytest.LogCaptureFixture) -> None:
    """eventbus.events gets handled / retry / failed records with their fields."""
    caplog.set_level(logging.DEBUG, logger="eventbus.events")
    bus = _memory_bus()
    ok, failed = Recorder(), Recorder()

    def flaky(event: Event) -> None:
        failed(event)
        raise ValueError("nope")

    with bus:
        ok_sub = bus.subscribe("a.*", ok)
        bad_sub = bus.subscribe("a.*", flaky, retry_on_error=True, max_retries=1)
        published = bus.publish("a.b", {"n": 1})
        ok.wait(1)
        failed.wait(2)
        wait_for(lambda: bus.get_stats().events_failed == 1, what="the failure to be final")
    handlings = [r.handling for r in caplog.records if r.name == "eventbus.events"]  # type: ignore[attr-defined]
    by_outcome = {(h["subscription"], h["outcome"]): h for h in handlings}
    assert set(by_outcome) == {
        (ok_sub.id, "handled"),
        (bad_sub.id, "retry"),
        (bad_sub.id, "failed"),
    }
    handled = by_outcome[(ok_sub.id, "handled")]
    assert handled["event_id"] == published.event_id
    assert handled["event_type"] == "a.b"
    assert handled["pattern"] == "a.*"
    assert handled["group"] is None
    assert handled["error"] is None
    assert handled["duration"] >= 0
    assert by_outcome[(bad_sub.id, "retry")]["attempt"] == 1
    final = by_outcome[(bad_sub.id, "failed")]
    assert final["attempt"] == 2
    assert final["error"] == "ValueError('nope')"


def test_events_logger_is_quiet_unless_enabled(caplog: pytest.LogCaptureFixture) -> None:
    """Without DEBUG on eventbus.events, handling an event logs nothing there."""
    caplog.set_level(logging.INFO)
    bus = _memory_bus()
    ok = Recorder()
    with bus:
        bus.subscribe("a.*", ok)
        bus.publish("a.b")
        ok.wait(1)
    assert [r for r in caplog.records if r.name == "eventbus.events"] == []


# -- Worker in-process ---------------------------------------------------------------------


def test_worker_logs_each_event_and_stops_cleanly(worker_log: pytest.LogCaptureFixture) -> None:
    """One readable line per handled / failed event; stop() gives exit 0 and a closed bus."""
    events_logger = logging.getLogger("eventbus.events")
    saved = events_logger.level, events_logger.propagate
    bus = _memory_bus()
    ok = Recorder()

    @bus.on("photo.*")
    def on_photo(event: Event) -> None:
        ok(event)

    @bus.on("photo.*", filter=lambda e: bool(e.data and e.data.get("bad")))
    def breaks(event: Event) -> None:
        raise RuntimeError("broken")

    running = _start(bus)
    assert bus.is_connected()
    good = bus.publish("photo.uploaded", {"id": 1})
    bad = bus.publish("photo.uploaded", {"bad": True})
    ok.wait(2)
    wait_for(lambda: bus.get_stats().events_failed == 1, what="the failure")
    running.worker.stop()
    assert running.join() == EXIT_OK
    assert not bus.is_connected()
    lines = _lines(worker_log)
    assert any("2 subscription(s), 0 durable group(s)" in line for line in lines), lines
    assert any(f"handled photo.uploaded {good.event_id}" in line for line in lines), lines
    assert any(
        line.startswith(f"failed  photo.uploaded {bad.event_id} after 1 attempt(s)")
        and "breaks" in line
        and "RuntimeError('broken')" in line
        for line in lines
    ), lines
    assert any("stopped cleanly" in line for line in lines), lines
    # the logger the worker listened on is as it was
    assert (events_logger.level, events_logger.propagate) == saved
    assert events_logger.handlers == []


def test_worker_lines_name_only_its_own_bus(worker_log: pytest.LogCaptureFixture) -> None:
    """Another bus in the process handling events adds no line to this worker's log."""
    mine, other = _memory_bus(), _memory_bus()
    seen_mine, seen_other = Recorder(), Recorder()
    mine.subscribe("x.*", seen_mine)
    other.subscribe("y.*", seen_other)
    with other:
        running = _start(mine)
        other.publish("y.only")
        mine.publish("x.only")
        seen_other.wait(1)
        seen_mine.wait(1)
        running.worker.stop()
        assert running.join() == EXIT_OK
    lines = _lines(worker_log)
    assert any("handled x.only" in line for line in lines)
    assert not any("y.only" in line for line in lines)


def test_stop_waits_for_the_running_handler(worker_log: pytest.LogCaptureFixture) -> None:
    """A graceful stop lets the running handler and the queued events finish."""
    release = threading.Event()
    started = threading.Event()
    done: list[int] = []
    bus = _memory_bus()

    @bus.on("slow.*")
    def slow(event: Event) -> None:
        started.set()
        assert release.wait(10)
        done.append(event.data)

    running = _start(bus, stop_timeout=30)
    for n in range(3):
        bus.publish("slow.job", n)
    assert started.wait(5)
    running.worker.stop()
    wait_for(lambda: any("warm shutdown" in line for line in _lines(worker_log)), what="shutdown")
    assert running.thread.is_alive()  # still waiting for the handler
    release.set()
    assert running.join() == EXIT_OK
    assert done == [0, 1, 2]


def test_stop_timeout_passed_gives_exit_1(worker_log: pytest.LogCaptureFixture) -> None:
    """Handlers still running after stop_timeout: run() returns 1 and says so."""
    release = threading.Event()
    started = threading.Event()
    bus = _memory_bus()

    @bus.on("slow.*")
    def slow(event: Event) -> None:
        started.set()
        release.wait(10)

    try:
        running = _start(bus, stop_timeout=0.2)
        bus.publish("slow.job")
        bus.publish("slow.job")
        assert started.wait(5)
        running.worker.stop()
        assert running.join() == EXIT_UNFINISHED
    finally:
        release.set()
    assert any("2 event(s) unfinished" in line for line in _lines(worker_log)), _lines(worker_log)


def test_forced_stop_does_not_wait(worker_log: pytest.LogCaptureFixture) -> None:
    """stop(force=True) during the shutdown makes run() return 1 without the handler."""
    release = threading.Event()
    started = threading.Event()
    bus = _memory_bus()

    @bus.on("slow.*")
    def slow(event: Event) -> None:
        started.set()
        release.wait(10)

    try:
        running = _start(bus, stop_timeout=60)
        bus.publish("slow.job")
        assert started.wait(5)
        running.worker.stop()
        wait_for(
            lambda: any("warm shutdown" in line for line in _lines(worker_log)), what="shutdown"
        )
        running.worker.stop(force=True)
        assert running.join() == EXIT_UNFINISHED
    finally:
        release.set()
    assert any("cold shutdown" in line for line in _lines(worker_log))


def test_sigterm_in_the_main_thread_stops_and_restores_handlers() -> None:
    """run_worker in the main thread: SIGTERM stops it (exit 0); the old handlers are back."""
    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(signum)

    old_term = signal.signal(signal.SIGTERM, previous)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        bus = _memory_bus()
        seen = Recorder()
        bus.subscribe("a.*", seen)

        def when_ready() -> None:
            bus.publish("a.b")
            seen.wait(1)
            os.kill(os.getpid(), signal.SIGTERM)

        assert run_worker(bus, name="main", on_ready=when_ready) == EXIT_OK
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is old_int
        assert calls == []  # the worker's handler got the signal, not the previous one
        assert not bus.is_connected()
    finally:
        signal.signal(signal.SIGTERM, old_term)


def test_worker_checks_its_arguments() -> None:
    """A non-bus or a negative stop_timeout fail at construction."""
    with pytest.raises(TypeError):
        Worker("redis://", name="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stop_timeout"):
        Worker(_memory_bus(), name="x", stop_timeout=-1)


# -- the command: usage errors -------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory, holding modules for ``eventbus worker`` to import."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def _module(directory: Path, body: str) -> str:
    name = f"app_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(body, encoding="utf-8")
    return name


@pytest.mark.parametrize(
    ("body", "suffix", "message"),
    [
        ("x = 1\n", "", "no EventBus found in module"),
        (
            "from eventbus import EventBus\n"
            "a = EventBus.from_url('memory://', service_name='a')\n"
            "b = EventBus.from_url('memory://', service_name='b')\n",
            "",
            "several EventBus objects (a, b)",
        ),
        ("x = 1\n", ":missing", "has no attribute 'missing'"),
        ("x = 1\n", ":x", ":x is a int, not an EventBus"),
        ("x = 1\n", ":", "expected MODULE or MODULE:BUS"),
    ],
)
def test_worker_usage_errors_exit_2(
    app_dir: Path,
    capsys: pytest.CaptureFixture[str],
    body: str,
    suffix: str,
    message: str,
) -> None:
    """A module without a (single) bus, or a bad BUS, exits 2 with a message."""
    name = _module(app_dir, body)
    assert main(["worker", name + suffix]) == 2
    assert message in capsys.readouterr().err


def test_worker_with_a_missing_module_exits_2(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown module exits 2 and names it."""
    assert main(["worker", "no_such_module_xyz.events"]) == 2
    assert "no module named 'no_such_module_xyz'" in capsys.readouterr().err


def test_worker_refuses_the_global_url(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--url does not silently re-point the module's bus: exit 2."""
    name = _module(
        app_dir,
        "from eventbus import EventBus\nbus = EventBus.from_url('memory://', service_name='a')\n",
    )
    assert main(["--url", "memory://", "worker", name]) == 2
    assert "--url does not apply" in capsys.readouterr().err


def test_worker_finds_the_only_bus_and_runs_it(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MODULE without :BUS takes the module's only EventBus, whatever its name."""
    name = _module(
        app_dir,
        "import os, signal, threading, time\n"
        "from eventbus import EventBus\n"
        "events = EventBus.from_url('memory://', service_name='only')\n"
        "@events.on('a.*')\n"
        "def handle(event):\n"
        "    pass\n"
        "def stop():\n"
        "    # the worker installs its signal handlers before it connects the bus\n"
        "    deadline = time.monotonic() + 10\n"
        "    while not events.is_connected() and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    if events.is_connected():  # else the test times out, pytest lives on\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=stop, daemon=True).start()\n",
    )
    assert main(["worker", name]) == 0
    err = capsys.readouterr().err
    assert f"worker {name}:events ready" in err
    assert "stopped cleanly" in err


def test_worker_command_with_a_missing_module_in_a_process() -> None:
    """The real command exits 2 for a module that does not exist."""
    result = subprocess.run(
        [sys.executable, "-m", "eventbus", "worker", "no_such_module_xyz"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "no module named 'no_such_module_xyz'" in result.stderr


# -- the command as a process against Redis -------------------------------------------------


class WorkerProcess:
    """``python -m eventbus worker tests._worker_app`` with its stderr read by a thread."""

    def __init__(self, url: str, *args: str) -> None:
        env = {**os.environ, "EVENTBUS_URL": url}
        env.pop("LOG_LEVEL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventbus", "worker", APP, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: io.TextIOBase) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 20.0) -> None:
        wait_for(
            lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
            timeout=timeout,
            what=f"{text!r} in the worker's log",
        )
        assert any(text in line for line in self.lines), self.log

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit:\n{self.log}") from None

    def kill(self) -> None:
        """Kill it if it still runs; close its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.fixture
def workers(redis_url: str) -> Iterator[list[WorkerProcess]]:
    """Start worker processes with ``workers.start()``; each is killed at teardown."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.kill()


def _start_worker(started: list[WorkerProcess], url: str, *args: str) -> WorkerProcess:
    process = WorkerProcess(url, *args)
    started.append(process)
    process.wait_for_line(f"worker {APP}:bus ready")
    return process


@pytest.fixture
def tester(redis_url: str) -> Iterator[EventBus]:
    """The test's own bus on the test Redis, to publish from."""
    bus = EventBus.from_url(redis_url, service_name="tester")
    bus.connect()
    yield bus
    bus.disconnect(timeout=2.0)


def _know_group(bus: EventBus) -> None:
    """Make the publisher's group registry include ``tasks`` before publishing."""
    wait_for(lambda: "tasks" in bus.get_group_patterns(), timeout=10, what="group tasks")


def _done(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall("worker:done").items()}


def test_worker_command_handles_fanout_and_group_events(
    redis_url: str,
    redis_client: redis.Redis,
    tester: EventBus,
    workers: list[WorkerProcess],
) -> None:
    """Fan-out and group handlers of the module run in the worker; each has a log line;
    Ctrl-C (SIGINT) stops it with exit 0."""
    worker = _start_worker(workers, redis_url)
    assert "group tasks  task.* (consumer" in worker.log
    _know_group(tester)
    jobs = [tester.publish("job.created", {"n": n}) for n in range(2)]
    broken = tester.publish("job.created", {"fail": True})
    tasks = [tester.publish("task.run", {"n": n}) for n in range(3)]
    wait_for(lambda: redis_client.llen("worker:fanout") == 3, timeout=10, what="fan-out")
    wait_for(lambda: len(_done(redis_client)) == 3, timeout=10, what="group tasks")
    assert _done(redis_client) == {t.event_id: 1 for t in tasks}
    assert {int(p) for p in redis_client.lrange("worker:pids", 0, -1)} == {worker.proc.pid}
    for result in [*jobs, *tasks]:
        worker.wait_for_line(f"handled {result.event_type} {result.event_id}")
    worker.wait_for_line(f"failed  job.created {broken.event_id} after 1 attempt(s)")
    task_line = next(line for line in worker.lines if tasks[0].event_id in line)
    assert "INFO eventbus.worker" in task_line
    assert "run_task, group tasks" in task_line
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0, worker.log
    assert "warm shutdown (SIGINT)" in worker.log
    assert "stopped cleanly" in worker.log


def test_sigterm_lets_the_running_group_handler_finish_and_a_restart_does_the_rest(
    redis_url: str,
    redis_client: redis.Redis,
    tester: EventBus,
    workers: list[WorkerProcess],
) -> None:
    """SIGTERM during a slow group handler: it finishes and is acknowledged, exit 0;
    the events not yet taken stay in the group's stream and the next run handles them,
    each exactly once in all."""
    first = _start_worker(workers, redis_url)
    _know_group(tester)
    ids = [tester.publish("task.run", {"n": n, "sleep": 0.4}).event_id for n in range(6)]
    wait_for(lambda: redis_client.llen("worker:started") >= 1, timeout=10, what="a task")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0, first.log
    assert "warm shutdown (SIGTERM)" in first.log
    started = {s.decode() for s in redis_client.lrange("worker:started", 0, -1)}
    done = _done(redis_client)
    assert set(done) == started  # what was in flight finished
    assert set(done.values()) == {1}
    assert len(done) < len(ids)  # the rest was left for the next run
    assert tester.get_groups()["tasks"].pending == 0  # and what was done is acknowledged

    ids += [tester.publish("task.run", {"n": n}).event_id for n in (6, 7)]  # while it is down
    second = _start_worker(workers, redis_url)
    wait_for(lambda: len(_done(redis_client)) == len(ids), timeout=20, what="every task")
    assert _done(redis_client) == dict.fromkeys(ids, 1)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0, second.log
    assert tester.get_groups()["tasks"].pending == 0


def test_second_signal_forces_the_exit_and_the_entry_stays_pending(
    redis_url: str,
    redis_client: redis.Redis,
    tester: EventBus,
    workers: list[WorkerProcess],
) -> None:
    """A second SIGTERM during the shutdown exits 1 at once; the unfinished group entry
    is not acknowledged, so it is delivered again later (not lost)."""
    worker = _start_worker(workers, redis_url, "--stop-timeout", "60")
    _know_group(tester)
    tester.publish("task.run", {"block": True})
    wait_for(lambda: redis_client.llen("worker:started") == 1, timeout=10, what="the task")
    worker.signal(signal.SIGTERM)
    worker.wait_for_line("warm shutdown (SIGTERM)")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 1, worker.log
    assert "cold shutdown" in worker.log
    assert _done(redis_client) == {}
    assert tester.get_groups()["tasks"].pending == 1


def test_stop_timeout_passed_exits_1(
    redis_url: str,
    redis_client: redis.Redis,
    tester: EventBus,
    workers: list[WorkerProcess],
) -> None:
    """With --stop-timeout shorter than the running handler, the worker exits 1 after it
    (without waiting for the handler thread) and says what it left."""
    worker = _start_worker(workers, redis_url, "--stop-timeout", "0.3")
    _know_group(tester)
    tester.publish("task.run", {"block": True})
    wait_for(lambda: redis_client.llen("worker:started") == 1, timeout=10, what="the task")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 1, worker.log
    assert "1 event(s) unfinished" in worker.log
    assert tester.get_groups()["tasks"].pending == 1
