"""Fork safety: a bus made in the parent works in a forked child (gunicorn, Celery prefork)."""

from __future__ import annotations

import gc
import os
import threading
import uuid
import warnings
from collections.abc import Callable

import pytest

from eventbus import Event, EventBus

from _helpers import Recorder, wait_for


def _fork(child: Callable[[], int]) -> int:
    """Run ``child`` in a forked process; return its exit status."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = child()
        except BaseException as exc:
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def prefix() -> str:
    """A key prefix of the test's own."""
    return f"fork{uuid.uuid4().hex[:8]}:"


def test_child_publishes_and_subscribes_with_the_parents_bus(redis_url: str, prefix: str) -> None:
    """After fork, the child's bus reconnects on first use with its own id, receives its own
    subscriptions and the parent's, and the parent's bus keeps working."""
    parent_got, from_child = Recorder(), Recorder()
    with EventBus.from_url(f"{redis_url}?key_prefix={prefix}", service_name="forker") as bus:
        bus.subscribe("parent.*", parent_got)
        bus.subscribe("child.hello", from_child)
        bus.join_room("workers")
        parent_id = bus.client_id

        def child() -> int:
            assert bus.client_id != parent_id, "the child must have an id of its own"
            got = Recorder()
            bus.subscribe("child.*", got)  # first use: the child connects
            assert bus.is_connected()
            bus.publish("child.ping", {"pid": os.getpid()})
            events = got.wait(1, timeout=10)
            assert events[0].data == {"pid": os.getpid()}
            members = bus.get_room_members("workers")
            assert bus.client_id in members, members
            bus.publish("child.hello", {"pid": os.getpid()})
            bus.disconnect()
            gc.collect()  # collect the inherited connections: must not shut the parent's down
            return 0

        assert _fork(child) == 0
        (hello,) = from_child.wait(1, timeout=10)
        assert hello.data["pid"] != os.getpid()
        # The parent's threads and sockets were never touched by the child.
        bus.publish("parent.still-works")
        parent_got.wait(1)
        assert bus.client_id == parent_id
        assert bus.health_check().status == "healthy"


def test_a_bus_never_connected_before_fork_gets_an_id_of_its_own_in_the_child(
    redis_url: str, prefix: str
) -> None:
    """gunicorn --preload: the bus is made (not connected) in the parent, each worker
    connects its own. The child's bus has its own client id (presence, group consumer
    names) and connects when told to; the parent's is untouched."""
    bus = EventBus.from_url(f"{redis_url}?key_prefix={prefix}", service_name="preload")
    got = Recorder()
    bus.subscribe("w.*", got)
    parent_id = bus.client_id

    def child() -> int:
        assert bus.client_id != parent_id, "the child must have an id of its own"
        assert str(os.getpid()) in bus.client_id
        assert not bus.is_connected()
        with bus:
            bus.publish("w.ping", {"pid": os.getpid()})
            (event,) = got.wait(1, timeout=10)
            assert event.data == {"pid": os.getpid()}
            clients = [c.client_id for c in bus.get_clients()]
            assert bus.client_id in clients, clients
        return 0

    assert _fork(child) == 0
    assert bus.client_id == parent_id
    assert not bus.is_connected()
    with bus:
        bus.publish("w.parent")
        assert got.wait(1, timeout=10)[0].type == "w.parent"


def test_child_handles_events_for_subscriptions_made_before_fork(
    redis_url: str, prefix: str
) -> None:
    """A subscription made in the parent (decorator at import time) runs in the child once the
    child connects, as a prefork worker does."""
    url = f"{redis_url}?key_prefix={prefix}"
    bus = EventBus.from_url(url, service_name="prefork")
    seen: list[int] = []
    ready = threading.Event()

    @bus.on("job.*")
    def handle(event: Event) -> None:
        seen.append(os.getpid())
        ready.set()

    bus.connect()
    try:

        def child() -> int:
            bus.connect()  # what a worker_process_init hook does
            with EventBus.from_url(url, service_name="sender") as sender:
                sender.publish("job.run")
                wait_for(lambda: os.getpid() in seen, timeout=10, what="the child's handler")
            bus.disconnect()
            return 0

        assert _fork(child) == 0
        # The parent's subscription got the same event in the parent process.
        assert ready.wait(10)
        assert seen[0] == os.getpid()
    finally:
        bus.disconnect()


def test_fork_of_a_memory_bus_leaves_the_parent_working() -> None:
    """memory:// is per process: the child gets an empty broker of its own, the parent is fine."""
    got = Recorder()
    with EventBus.from_url(f"memory://fork-{uuid.uuid4().hex[:6]}", service_name="m") as bus:
        bus.subscribe("a.*", got)

        def child() -> int:
            child_got = Recorder()
            bus.subscribe("b.*", child_got)
            bus.publish("b.one")
            child_got.wait(1, timeout=5)
            bus.disconnect()
            return 0

        assert _fork(child) == 0
        bus.publish("a.one")
        got.wait(1)
