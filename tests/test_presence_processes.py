"""Room presence and the client registry across real OS processes, on a real Redis.

Each child process runs its own bus, joins ``photo:123`` and answers commands on stdin
(``members``, ``clients``, ``disconnect``, ``exit``) with one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from eventbus import ClientInfo, EventBus

from _helpers import wait_for

ROOM = "photo:123"
TTL = 2.0
HEARTBEAT = 0.5
REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
from eventbus import EventBus

url, service, room = sys.argv[1:4]
bus = EventBus.from_url(url, service_name=service, presence_ttl=2.0, heartbeat_interval=0.5)
bus.connect()
bus.join_room(room)
print(json.dumps(bus.client_id), flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "members":
        reply = bus.get_room_members(room)
    elif command == "clients":
        reply = sorted([c.client_id, c.service_name] for c in bus.get_clients())
    elif command == "disconnect":
        bus.disconnect()
        reply = "ok"
    elif command == "exit":
        break
    else:
        reply = "unknown command " + command
    print(json.dumps(reply), flush=True)
"""


class Child:
    """One child process with a bus in ``ROOM``; talk to it with :meth:`ask`."""

    def __init__(self, url: str, service: str) -> None:
        self.service = service
        # Closed in close(); a file, not a pipe, so a chatty child can never block on it.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, service, ROOM],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=REPO,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.client_id: str = self._next(timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _next(self, timeout: float) -> Any:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.service} did not answer within {timeout}s; stderr:\n{self.stderr()}"
            ) from None
        if line is None:
            raise AssertionError(
                f"{self.service} exited ({self.proc.poll()}); stderr:\n{self.stderr()}"
            )
        return json.loads(line)

    def ask(self, command: str, timeout: float = 15.0) -> Any:
        """Send a command; return the child's JSON answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._next(timeout)

    def kill(self) -> None:
        """SIGKILL the child (by its PID) and reap it: no chance to clean up."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        """Reap the child whatever state it is in, and close every pipe."""
        try:
            if self.proc.poll() is None:
                if self.proc.stdin is not None:
                    with contextlib.suppress(OSError):  # it may have died already
                        self.proc.stdin.write("exit\n")
                        self.proc.stdin.flush()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            self._reader.join(timeout=10)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._stderr.close()


ChildFactory = Callable[[str], Child]


@pytest.fixture
def url(redis_url: str) -> str:
    """The test Redis with a key prefix of this test's own."""
    return f"{redis_url}?key_prefix=pp{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def spawn(url: str) -> Iterator[ChildFactory]:
    """Start child processes; every one is reaped at teardown, whatever happened."""
    children: list[Child] = []

    def start(service: str) -> Child:
        child = Child(url, service)
        children.append(child)
        return child

    try:
        yield start
    finally:
        errors = []
        for child in children:
            try:
                child.close()
            except Exception as exc:  # reap the others before reporting
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def observer(url: str) -> Iterator[EventBus]:
    """The test's own bus on the same Redis and prefix (not in the room)."""
    bus = EventBus.from_url(
        url, service_name="observer", presence_ttl=TTL, heartbeat_interval=HEARTBEAT
    )
    bus.connect()
    try:
        yield bus
    finally:
        bus.disconnect(timeout=2.0)


def _clients(bus: EventBus) -> dict[str, ClientInfo]:
    return {info.client_id: info for info in bus.get_clients()}


def _start_pair(spawn: ChildFactory) -> tuple[Child, Child]:
    # Start both before waiting on either: they boot in parallel.
    a, b = spawn("photo-worker"), spawn("notifier")
    assert a.client_id != b.client_id
    return a, b


def test_two_processes_see_each_other_in_the_room(spawn: ChildFactory, observer: EventBus) -> None:
    """Both children's ids are room members for the test's bus and for each other."""
    a, b = _start_pair(spawn)
    assert a.client_id.startswith("photo-worker:")
    assert a.client_id.split(":")[2] == str(a.pid)
    assert b.client_id.split(":")[2] == str(b.pid)
    both = sorted([a.client_id, b.client_id])
    assert observer.get_room_members(ROOM) == both  # join_room returned: already written
    assert a.ask("members") == both
    assert b.ask("members") == both


def test_get_clients_lists_both_processes_with_their_service_names(
    spawn: ChildFactory, observer: EventBus
) -> None:
    """get_clients() shows each child with its service name, pid and (next heartbeat) room."""
    a, b = _start_pair(spawn)

    def both_in_room() -> dict[str, ClientInfo] | None:
        found = _clients(observer)
        ok = all(found.get(c.client_id) and found[c.client_id].rooms == (ROOM,) for c in (a, b))
        return found if ok else None

    # A record is a heartbeat's snapshot: the room shows from the beat after join_room.
    clients = wait_for(both_in_room, timeout=HEARTBEAT + 5.0, what="both children's records")
    assert clients[a.client_id].service_name == "photo-worker"
    assert clients[b.client_id].service_name == "notifier"
    assert clients[a.client_id].pid == a.pid
    assert clients[b.client_id].pid == b.pid
    assert observer.client_id in clients
    seen_by_a = wait_for(
        lambda: (found := a.ask("clients")) and b.client_id in {cid for cid, _ in found} and found,
        what="b in a's client list",
    )
    assert [b.client_id, "notifier"] in seen_by_a


def test_a_killed_process_expires_from_members_and_clients(
    spawn: ChildFactory, observer: EventBus
) -> None:
    """After SIGKILL a child's id leaves the room and the client list within the TTL; the other stays."""
    victim, survivor = _start_pair(spawn)
    ids = {victim.client_id, survivor.client_id}
    wait_for(lambda: _clients(observer).keys() >= ids, what="both client records")
    first_expiry = _clients(observer)[survivor.client_id].expires_at

    assert victim.client_id in observer.get_room_members(ROOM)  # right before the kill
    victim.kill()

    wait_for(
        lambda: victim.client_id not in observer.get_room_members(ROOM),
        timeout=TTL + 3.0,
        what="the killed child to leave the room",
    )
    assert observer.get_room_members(ROOM) == [survivor.client_id]
    assert survivor.ask("members") == [survivor.client_id]

    wait_for(
        lambda: victim.client_id not in _clients(observer),
        timeout=TTL + 3.0,
        what="the killed child's client record to expire",
    )
    clients = _clients(observer)
    assert survivor.client_id in clients
    # The survivor is kept alive by its heartbeat, not by its first registration.
    assert clients[survivor.client_id].expires_at > first_expiry
    assert survivor.client_id in observer.get_room_members(ROOM)


def test_graceful_disconnect_removes_the_member_at_once(
    spawn: ChildFactory, observer: EventBus
) -> None:
    """A child's disconnect() removes it from the room and the client list immediately."""
    leaver, stayer = _start_pair(spawn)
    ids = {leaver.client_id, stayer.client_id}
    wait_for(lambda: _clients(observer).keys() >= ids, what="both client records")
    assert sorted(ids) == observer.get_room_members(ROOM)

    assert leaver.ask("disconnect") == "ok"
    # No waiting: removal happens inside disconnect(), not by expiry.
    assert observer.get_room_members(ROOM) == [stayer.client_id]
    assert leaver.client_id not in _clients(observer)
    assert stayer.ask("members") == [stayer.client_id]

    leaver.proc.stdin.write("exit\n")  # type: ignore[union-attr]
    leaver.proc.stdin.flush()  # type: ignore[union-attr]
    # A disconnected bus leaves no thread that keeps the interpreter alive.
    assert leaver.proc.wait(timeout=10) == 0, leaver.stderr()
