"""eventbus.contrib.celery with a real Celery worker process and a real Redis.

The worker runs ``tests/_celery_app.py`` (``celery -A tests._celery_app worker``),
with the broker on database 1 of the test Redis and the bus on database 0; its
handlers write what they did into database 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import redis
from celery import Celery

from eventbus import EventBus
from eventbus.contrib.celery import EventBusCelery
from eventbus.contrib.celery import (
    setup as setup_celery,
)  # `setup` at module level is a pytest < 8.1 xunit hook

from _helpers import Recorder, wait_for

ROOT = Path(__file__).resolve().parent.parent


class CeleryWorker:
    """``celery -A tests._celery_app worker`` with its log in a file."""

    def __init__(self, bus_url: str, broker_url: str, log_path: Path, pool: str) -> None:
        env = {**os.environ, "EVENTBUS_URL": bus_url, "CELERY_BROKER_URL": broker_url}
        env.pop("LOG_LEVEL", None)
        self.log_path = log_path
        self._log: IO[str] = open(log_path, "w", encoding="utf-8")  # noqa: SIM115
        args = ["--pool", pool] + (["--concurrency", "2"] if pool == "prefork" else [])
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests._celery_app",
                "worker",
                *args,
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"eventbus-test-{pool}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (warm shutdown), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[object]:
    """``start_worker(pool)`` starts a worker; every one is stopped at teardown."""
    started: list[CeleryWorker] = []
    broker = redis_url.rsplit("/", 1)[0] + "/1"

    def start(pool: str) -> CeleryWorker:
        worker = CeleryWorker(redis_url, broker, tmp_path / f"celery-{pool}.log", pool)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=10)


@pytest.fixture
def tester(redis_url: str) -> Iterator[EventBus]:
    """The test's own bus, to publish and subscribe from."""
    bus = EventBus.from_url(redis_url, service_name="tester")
    bus.connect()
    yield bus
    bus.disconnect(timeout=2.0)


def _records(client: redis.Redis, key: str) -> list[tuple[int, int, str]]:
    found = []
    for raw in client.lrange(key, 0, -1):
        pid, ppid, connected = raw.decode().split(":")
        found.append((int(pid), int(ppid), connected))
    return found


def _ready(
    client: redis.Redis, worker: CeleryWorker, children: int
) -> tuple[tuple[int, int, str], list[tuple[int, int, str]]]:
    """Wait until the worker is ready; its main process's record and its children's."""

    def ready() -> bool:
        assert worker.proc.poll() is None, worker.log
        return (
            len(_records(client, "celery:main")) == 1
            and len(_records(client, "celery:ready")) == children
        )

    try:
        wait_for(ready, timeout=30, what="the worker's processes")
    except AssertionError as exc:
        records = [client.lrange(k, 0, -1) for k in ("celery:main", "celery:ready")]
        raise AssertionError(f"{exc} ({records}); the worker's log:\n{worker.log}") from None
    return _records(client, "celery:main")[0], _records(client, "celery:ready")


def _down(client: redis.Redis) -> dict[int, str]:
    return {
        int(pid): connected
        for pid, _, connected in (
            r.decode().split(":") for r in client.lrange("celery:down", 0, -1)
        )
    }


def _send_task(broker_url: str, photo_id: str) -> None:
    client = Celery("sender", broker=broker_url)
    try:
        client.send_task("publish_progress", args=[photo_id], kwargs={"steps": 4})
    finally:
        client.close()


def test_prefork_children_run_handlers_once_per_group_and_tasks_publish(
    start_worker: object,
    redis_url: str,
    redis_client: redis.Redis,
    tester: EventBus,
) -> None:
    """--pool=prefork --concurrency=2: the bus connects in each child (not the main
    process); 200 group events are each handled once across both children; fan-out
    events reach both; a task's progress events reach the test; SIGTERM disconnects
    each child's bus and the worker exits 0."""
    worker = start_worker("prefork")  # type: ignore[operator]
    main, ready = _ready(redis_client, worker, children=2)
    assert main == (worker.proc.pid, main[1], "False")  # the main process never connects
    children = {pid for pid, _, _ in ready}
    assert len(children) == 2
    assert {ppid for _, ppid, _ in ready} == {worker.proc.pid}
    assert {connected for _, _, connected in ready} == {"True"}

    # Only the children are live buses (each writes its client record on its first
    # heartbeat, just after connecting): the main process holds no connection.
    def live_pids() -> set[int]:
        return {c.pid for c in tester.get_clients() if c.service_name == "celery-app"}

    wait_for(lambda: live_pids() == children, timeout=10, what="both children's records")

    wait_for(lambda: "orders" in tester.get_group_patterns(), timeout=10, what="group orders")
    ids = [tester.publish("order.created", {"n": n}).event_id for n in range(200)]
    wait_for(lambda: redis_client.hlen("celery:orders") == 200, timeout=30, what="200 group events")
    counts = {k.decode(): int(v) for k, v in redis_client.hgetall("celery:orders").items()}
    assert counts == dict.fromkeys(ids, 1)
    handlers = {
        tuple(map(int, m.decode().split(":"))) for m in redis_client.smembers("celery:order-pids")
    }
    assert handlers == {
        (pid, worker.proc.pid) for pid in children
    }  # both children, never the parent

    pings = [tester.publish("ping.all").event_id for _ in range(3)]
    for ping in pings:
        wait_for(
            lambda ping=ping: (
                {int(p) for p in redis_client.smembers(f"celery:ping:{ping}")} == children
            ),
            timeout=10,
            what="the ping in both children",
        )

    progress = Recorder()
    tester.subscribe("photo.progress", progress)
    _send_task(redis_url.rsplit("/", 1)[0] + "/1", "photo-1")
    got = progress.wait(4, timeout=20)
    assert [e.data["progress"] for e in got] == [25, 50, 75, 100]
    assert {e.data["pid"] for e in got} <= children

    assert worker.stop() == 0, worker.log
    # each child disconnected its bus as it exited (the main one never had it connected)
    assert _down(redis_client) == {**dict.fromkeys(children, "False"), worker.proc.pid: "False"}
    assert tester.get_groups()["orders"].pending == 0
    assert "connected in pool process" in worker.log


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_solo_and_threads_pools_connect_in_the_worker_process(
    start_worker: object,
    redis_client: redis.Redis,
    tester: EventBus,
    pool: str,
) -> None:
    """--pool=solo / threads: the bus connects in the worker's one process and handles
    events there; worker_shutdown disconnects it."""
    worker = start_worker(pool)  # type: ignore[operator]
    # (the solo pool also sends worker_process_init, in the worker process itself)
    (pid, _, connected), inits = _ready(redis_client, worker, children=int(pool == "solo"))
    assert (pid, connected) == (worker.proc.pid, "True")
    assert all(init == (pid, init[1], "True") for init in inits)
    wait_for(lambda: "orders" in tester.get_group_patterns(), timeout=10, what="group orders")
    order = tester.publish("order.created").event_id
    ping = tester.publish("ping.one").event_id
    wait_for(lambda: redis_client.hget("celery:orders", order) == b"1", timeout=10, what="order")
    wait_for(
        lambda: redis_client.smembers(f"celery:ping:{ping}") == {str(pid).encode()},
        timeout=10,
        what="ping",
    )
    assert worker.stop() == 0, worker.log
    assert _down(redis_client) == {pid: "False"}
    assert f"disconnected in the worker process {pid}" in worker.log


def test_arguments_are_checked() -> None:
    """A non-bus, a non-app or a negative timeout fail at once."""
    bus = EventBus.from_url("memory://", service_name="x")
    with pytest.raises(TypeError):
        EventBusCelery("bus")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EventBusCelery(bus).init_app(object())
    with pytest.raises(ValueError, match="shutdown_timeout"):
        setup_celery(Celery("x"), bus, shutdown_timeout=-1)
