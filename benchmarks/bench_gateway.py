"""Gateway load: many authenticated WebSocket connections held by ONE gateway process.

What it measures, against one ``eventbus gateway`` process on a fresh Redis:

* **memory per connection**: the gateway's ``VmRSS`` (``/proc/<pid>/status``) once
  warmed up (one socket connected, joined, gone), then after every socket connected,
  authenticated with its own token and joined its rooms; the difference divided by the
  number of sockets;
* **deliveries/s and publish -> socket latency** for (a) rooms of 10 sockets and (b)
  one room of every socket. A Python ``EventBus`` on the same Redis calls
  ``publish_to_room`` with ``CLOCK_MONOTONIC`` in the event's data (that clock is one
  for every process of the machine); each socket takes the clock right after it has
  parsed that event's Socket.IO EVENT frame (see below). Each scenario runs twice:
  **paced** at an offered rate (the issue's 3,000 deliveries/s: 300 publishes/s to
  rooms of 10, 3/s to the room of 1,000), and as a **burst** (publish as fast as one
  thread can, then wait for the last delivery: what the gateway can push when it is
  the bottleneck).

The clients run in separate processes (``python -m benchmarks.bench_gateway
--client``, driven over stdin/stdout), so that they do not share the gateway's GIL, but
they do share this machine's cores with it, with Redis and with the publisher: on a
2-core machine the clients' CPU is part of what is measured. To keep that share small
without skipping any per-socket work, each socket is a lean client written on the
``websockets`` library (asyncio) rather than python-socketio's ``AsyncClient``; it
speaks the whole protocol for itself, on its own WebSocket connection:

1. opens ``ws://HOST:PORT/socket.io/?EIO=4&transport=websocket`` and reads the
   Engine.IO OPEN packet (``0{"sid", "pingInterval", ...}``);
2. sends the Socket.IO CONNECT with its own token (``40{"token": ...}``) and waits for
   the server's CONNECT (``40{"sid": ...}``; a ``44`` refusal fails the run);
3. joins each of its rooms with an acknowledged EVENT (``42<id>["join", {"room": R}]``)
   and checks the ACK (``43<id>[{"ok": true}]``);
4. then one reader task per socket answers each Engine.IO PING (``2``) with a PONG
   (``3``), and decodes each Socket.IO EVENT frame (``42["bench.gateway", envelope]``)
   with ``json.loads``; the latency sample is ``clock()`` taken right after that parse
   minus the publish time in the envelope's data, for every socket that received it.
   A Socket.IO DISCONNECT, an Engine.IO CLOSE or a lost connection counts as a dropped
   socket; at the end each socket sends DISCONNECT (``41``) and closes.

Run it alone (it starts its own ``redis-server``)::

    python -m benchmarks.bench_gateway            # 1,000 connections, about 1 minute
    python -m benchmarks.bench_gateway --quick    # 1,000 connections, shorter phases
    python -m benchmarks.bench_gateway --smoke    # 20 connections, a few seconds
    python -m benchmarks.bench_gateway --write    # also (re)writes its section of docs/benchmarks.md

Nothing here is asserted by the test suite except that the numbers are well formed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, load_average, markdown_table, percentile, text_table

__all__ = [
    "GatewayPhase",
    "GatewayResult",
    "GatewaySettings",
    "render_markdown_section",
    "render_text",
    "run_gateway",
    "update_page",
]

DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
SECTION_TITLE = "## Gateway: many WebSocket connections on one process"
EVENT_TYPE = "bench.gateway"
ROOM_PREFIX = "bench:"
KID = "bench"
SECRET = "bench-gateway-secret-0123456789abcdef-0123456789"  # >= 32 bytes (HS256)

#: The issue's targets for one gateway process on a 2-core machine.
TARGET_KB_PER_CONNECTION = 150.0
TARGET_DELIVERIES_PER_S = 3000.0
TARGET_P99_MS = 250.0


def clock() -> float:
    """``CLOCK_MONOTONIC`` in seconds: the same clock in every process of this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """How much work the gateway benchmark does."""

    connections: int = 1000
    client_processes: int = 2
    room_size: int = 10
    #: Offered deliveries per second in the paced runs.
    rate: float = TARGET_DELIVERIES_PER_S
    seconds: float = 5.0
    warmup: float = 1.0
    #: Deliveries per burst run (publishes = this / room size).
    burst_deliveries: int = 20_000
    #: Sockets connecting at once per client process.
    concurrency: int = 50
    quick: bool = False

    @classmethod
    def for_quick(cls) -> GatewaySettings:
        """Still 1,000 connections, shorter phases (about 30 s)."""
        return cls(seconds=1.5, warmup=0.3, burst_deliveries=6_000, quick=True)

    @classmethod
    def for_smoke(cls) -> GatewaySettings:
        """20 connections in one client process: a check that everything runs."""
        return cls(
            connections=20,
            client_processes=1,
            room_size=5,
            rate=200.0,
            seconds=0.3,
            warmup=0.1,
            burst_deliveries=200,
            concurrency=10,
            quick=True,
        )


@dataclass(frozen=True, kw_only=True)
class GatewayPhase:
    """One measured run: a room layout, paced or burst."""

    scenario: str
    mode: str
    room_size: int
    publishes: int
    offered_rate: float | None  # deliveries/s asked for (paced), None for a burst
    expected: int
    received: int
    seconds: float  # from the first publish to the last delivery
    gateway_cpu: float  # CPU seconds of the gateway process over the run
    clients_cpu: float  # CPU seconds of all client processes over the run
    latencies: tuple[float, ...] = field(repr=False)  # milliseconds, sorted

    @property
    def deliveries_per_s(self) -> float:
        """Deliveries per second, first publish to last delivery."""
        return self.received / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_delivery(self) -> float:
        """Gateway CPU time per delivery, µs."""
        return self.gateway_cpu / self.received * 1e6 if self.received else 0.0

    @property
    def clients_cpu_us_per_delivery(self) -> float:
        """Client processes' CPU time per delivery, µs."""
        return self.clients_cpu / self.received * 1e6 if self.received else 0.0

    def quantile(self, q: float) -> float:
        """A latency quantile in ms (nearest rank)."""
        return percentile(self.latencies, q) if self.latencies else float("nan")

    @property
    def max(self) -> float:
        """The largest latency, ms."""
        return self.latencies[-1] if self.latencies else float("nan")


@dataclass(frozen=True, kw_only=True)
class GatewayResult:
    """Everything one gateway run measured."""

    settings: GatewaySettings
    connections: int
    client_processes: int
    rss_before_kb: int
    rss_after_kb: int
    connect_seconds: float
    phases: tuple[GatewayPhase, ...]
    dropped: int
    elapsed: float
    load_after: str

    @property
    def kb_per_connection(self) -> float:
        """Gateway RSS growth per connection, KiB."""
        return (self.rss_after_kb - self.rss_before_kb) / self.connections

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(target, wanted, measured, met) for each target of the issue."""
        rows = [
            (
                f"gateway memory per connection ({self.connections:,} connections)",
                f"at most {TARGET_KB_PER_CONNECTION:.0f} KiB",
                f"{self.kb_per_connection:.1f} KiB",
                self.kb_per_connection <= TARGET_KB_PER_CONNECTION,
            )
        ]
        for phase in self.phases:
            complete = phase.received == phase.expected
            if phase.mode == "burst":
                rows.append(
                    (
                        f"{phase.scenario}: deliveries/s (burst)",
                        f"at least {TARGET_DELIVERIES_PER_S:,.0f}",
                        f"{phase.deliveries_per_s:,.0f}",
                        complete and phase.deliveries_per_s >= TARGET_DELIVERIES_PER_S,
                    )
                )
            elif phase.mode == "paced" and phase.offered_rate is not None:
                rows.append(
                    (
                        f"{phase.scenario}: p99 publish -> socket at "
                        f"{phase.offered_rate:,.0f} deliveries/s offered",
                        f"at most {TARGET_P99_MS:.0f} ms at {TARGET_DELIVERIES_PER_S:,.0f}/s",
                        f"{phase.quantile(0.99):.1f} ms",
                        complete
                        and phase.offered_rate >= TARGET_DELIVERIES_PER_S
                        and phase.quantile(0.99) <= TARGET_P99_MS,
                    )
                )
        return rows


# -- the gateway process -------------------------------------------------------------------


_READY = re.compile(r"listening on (http://\S+)")


def rss_kb(pid: int) -> int:
    """``VmRSS`` of process ``pid``, KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (``/proc/PID/stat``), seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 0, utime field 11, stime field 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class GatewayProcess:
    """``python -m eventbus gateway --port 0``; its URL read from its "listening on" line.

    Stopped by its PID (SIGTERM, SIGKILL after a deadline).
    """

    def __init__(self, redis_url: str, *, log: Path) -> None:
        self.redis_url = redis_url
        self.url = ""
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The gateway's PID."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> GatewayProcess:
        env = {**os.environ, "EVENTBUS_GATEWAY_KEYS": f"{KID}:{SECRET}"}
        env.pop("EVENTBUS_URL", None)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30.0
        while True:
            found = _READY.search(self.log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"the gateway did not start:\n{self.tail()}")
            time.sleep(0.05)

    def command(self) -> list[str]:
        """The gateway's command line."""
        return [
            sys.executable,
            "-m",
            "eventbus",
            "gateway",
            "--url",
            self.redis_url,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--connect-rate",
            "0",  # 1,000 sockets from one address: no per-IP connect limit here
        ]

    def tail(self, lines: int = 30) -> str:
        """The last lines of the gateway's log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __exit__(self, *exc_info: object) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- the client processes ------------------------------------------------------------------


async def _client_main() -> None:
    """A client process: read its config from stdin, connect, then obey commands.

    stdin, one JSON object per line: first ``{"url", "tokens", "rooms", "concurrency"}``,
    then commands ``{"cmd": "count" | "collect", "phase": P}`` or ``{"cmd": "quit"}``.
    stdout: one JSON object per line in answer.

    Each socket is a :class:`_LeanSocket` (Socket.IO v5 over Engine.IO v4 on a
    ``websockets`` connection; see the module docstring).
    """
    loop = asyncio.get_running_loop()

    async def read() -> dict[str, Any]:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            raise SystemExit(0)  # the coordinator went away
        message: dict[str, Any] = json.loads(line)
        return message

    def write(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    config = await read()
    sink = _Sink()
    clients: list[_LeanSocket] = []
    gate = asyncio.Semaphore(config["concurrency"])
    ws_url = _ws_url(config["url"])

    async def open_one(token: str, rooms: list[str]) -> None:
        async with gate:
            sock = _LeanSocket(sink)
            await sock.connect(ws_url, token)
            for room in rooms:
                ack = await sock.call("join", {"room": room})
                if not (isinstance(ack, dict) and ack.get("ok") is True):
                    raise RuntimeError(f"join {room!r} refused: {ack!r}")
        clients.append(sock)

    started = clock()
    try:
        await asyncio.gather(
            *(open_one(t, r) for t, r in zip(config["tokens"], config["rooms"], strict=True))
        )
    except Exception as exc:
        write({"error": f"{type(exc).__name__}: {exc}"})
        raise
    write({"ready": len(clients), "seconds": clock() - started})
    while True:
        command = await read()
        if command["cmd"] == "count":
            write(
                {
                    "count": len(sink.samples.get(command["phase"], ())),
                    "dropped": sink.dropped,
                    "cpu": time.process_time(),
                }
            )
        elif command["cmd"] == "collect":
            got = sink.samples.pop(command["phase"], [])
            write(
                {
                    "samples": [round(s * 1e3, 4) for s in got],
                    "last": sink.last.pop(command["phase"], None),
                    "dropped": sink.dropped,
                }
            )
        elif command["cmd"] == "quit":
            break
    sink.quitting = True
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    write({"bye": True})


def _ws_url(url: str) -> str:
    """The Engine.IO v4 WebSocket endpoint of a gateway's ``http://`` URL."""
    base = re.sub(r"^http", "ws", url.rstrip("/"))
    return f"{base}/socket.io/?EIO=4&transport=websocket"


@dataclass
class _Sink:
    """What a client process's sockets received: latencies by phase, drops."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    dropped: int = 0
    quitting: bool = False


class _LeanSocket:
    """One Socket.IO client socket spoken by hand over ``websockets`` (asyncio).

    Protocol, per socket (Engine.IO v4, Socket.IO v5, default namespace): open the
    WebSocket at ``/socket.io/?EIO=4&transport=websocket``; read the Engine.IO OPEN
    packet (``0{"sid", "pingInterval", ...}``); send the Socket.IO CONNECT with the
    token (``40{"token": ...}``) and wait for ``40{"sid"}`` (``44`` = refused: an
    error); ``join`` each room as an EVENT with an ack id (``42<id>["join", {...}]``)
    and wait for its ACK (``43<id>[{"ok": true}]``). Then one reader task per socket
    answers every Engine.IO PING (``2``) with a PONG (``3``) and parses every EVENT
    (``42[...]``) with ``json.loads``; the latency sample is taken right after that
    parse, for that socket. A Socket.IO DISCONNECT, an Engine.IO CLOSE or a lost
    connection counts as a dropped socket.
    """

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self._ws: Any = None
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_ack = 0
        self._reader: asyncio.Task[None] | None = None
        self._connected: asyncio.Future[str] | None = None

    async def connect(self, url: str, token: str) -> None:
        """Open the WebSocket, complete both handshakes; raise if refused."""
        from websockets.asyncio.client import connect

        self._ws = await connect(
            url, compression=None, ping_interval=None, open_timeout=30, max_size=None
        )
        opened = await asyncio.wait_for(self._ws.recv(), 30)
        if not isinstance(opened, str) or not opened.startswith("0"):
            raise RuntimeError(f"expected an Engine.IO OPEN packet, got {opened!r}")
        json.loads(opened[1:])  # the handshake: sid, pingInterval, pingTimeout, maxPayload
        self._connected = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())
        await self._ws.send("40" + json.dumps({"token": token}))
        await asyncio.wait_for(self._connected, 30)

    async def call(self, event: str, data: Any) -> Any:
        """Emit ``event`` with an ack id and return the ack's first argument."""
        self._next_ack += 1
        ack_id = self._next_ack
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        await self._ws.send(f"42{ack_id}" + json.dumps([event, data]))
        return await asyncio.wait_for(future, 30)

    async def disconnect(self) -> None:
        """Send the Socket.IO DISCONNECT and close the WebSocket."""
        with contextlib.suppress(Exception):
            await self._ws.send("41")
        with contextlib.suppress(Exception):
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader

    async def _read(self) -> None:
        ws, sink = self._ws, self._sink
        try:
            async for frame in ws:
                if frame[:2] == "42":  # a Socket.IO EVENT: parse it, then take the time
                    packet = json.loads(frame[2:])
                    arrived = clock()
                    if packet[0] == EVENT_TYPE:
                        data = packet[1]["data"]
                        sink.samples.setdefault(data["p"], []).append(arrived - data["t"])
                        sink.last[data["p"]] = arrived
                elif frame == "2":  # Engine.IO PING
                    await ws.send("3")
                elif frame[:2] == "43":  # Socket.IO ACK: 43<id>[args]
                    bracket = frame.index("[")
                    future = self._acks.pop(int(frame[2:bracket]), None)
                    args = json.loads(frame[bracket:])
                    if future is not None and not future.done():
                        future.set_result(args[0] if args else None)
                elif frame[:2] == "40":  # CONNECT accepted
                    if self._connected is not None and not self._connected.done():
                        self._connected.set_result(json.loads(frame[2:])["sid"])
                elif frame[:2] == "44":  # CONNECT refused
                    error = RuntimeError(f"connect refused: {frame[2:]}")
                    if self._connected is not None and not self._connected.done():
                        self._connected.set_exception(error)
                    break
                elif frame[:2] == "41" or frame[:1] == "1":  # DISCONNECT / CLOSE
                    break
        except Exception:  # the connection was lost: counted below
            pass
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(RuntimeError("closed before CONNECT"))
        if not sink.quitting:
            sink.dropped += 1


class _ClientProcess:
    """One ``--client`` process, driven over its stdin/stdout."""

    def __init__(self, config: dict[str, Any]) -> None:
        args = [sys.executable, "-m", "benchmarks.bench_gateway", "--client"]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.send(config)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client process {self.proc.pid} exited ({self.proc.poll()})")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"client process {self.proc.pid}: {message['error']}")
        return message

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def stop(self) -> None:
        """Ask it to disconnect its sockets and exit; kill it by PID if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.ask({"cmd": "quit"})
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()


@contextlib.contextmanager
def _clients(
    url: str, tokens: Sequence[str], rooms: Sequence[list[str]], settings: GatewaySettings
) -> Iterator[list[_ClientProcess]]:
    count = max(1, settings.client_processes)
    procs: list[_ClientProcess] = []
    try:
        for index in range(count):
            procs.append(
                _ClientProcess(
                    {
                        "url": url,
                        "tokens": list(tokens[index::count]),
                        "rooms": list(rooms[index::count]),
                        "concurrency": settings.concurrency,
                    }
                )
            )
        yield procs
    finally:
        for proc in procs:
            proc.stop()


# -- the coordinator -----------------------------------------------------------------------


def _token(sub: str) -> str:
    from eventbus.gateway._auth import mint_token

    return mint_token(kid=KID, secret=SECRET, sub=sub, rooms=[ROOM_PREFIX + "*"], ttl=3600)


def _layout(settings: GatewaySettings) -> tuple[list[str], list[list[str]], list[str]]:
    """Tokens, each socket's rooms, and the small rooms (socket i is in room i // size)."""
    n, size = settings.connections, settings.room_size
    if n % size:
        raise ValueError(f"connections ({n}) must be a multiple of room_size ({size})")
    small = [f"{ROOM_PREFIX}r{i}" for i in range(n // size)]
    tokens = [_token(f"bench-{i}") for i in range(n)]
    rooms = [[small[i // size], f"{ROOM_PREFIX}all"] for i in range(n)]
    return tokens, rooms, small


async def _warm_up(url: str) -> None:
    """One socket through the whole path (connect, join, an event, leave), so that the
    gateway's lazy imports and first allocations are in the RSS measured before."""
    import socketio

    sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    await sio.connect(
        url, auth={"token": _token("bench-warmup")}, transports=["websocket"], wait_timeout=30
    )
    await sio.call("join", {"room": f"{ROOM_PREFIX}warmup"}, timeout=30)
    await sio.disconnect()


def _paced(publish: Any, count: int, rate: float) -> float:
    """Call ``publish(i)`` ``count`` times at ``rate``/s; return the clock of the first call."""
    interval = 1.0 / rate
    start = clock()
    for index in range(count):
        delay = start + index * interval - clock()
        if delay > 0:
            time.sleep(delay)
        publish(index)
    return start


def _run_phase(
    bus: Any,
    gateway: GatewayProcess,
    procs: list[_ClientProcess],
    *,
    scenario: str,
    mode: str,
    rooms: Sequence[str],
    room_size: int,
    publishes: int,
    rate: float | None,
    name: str,
    timeout: float,
) -> GatewayPhase:
    """Publish ``publishes`` events round-robin over ``rooms``; wait; collect latencies."""
    expected = publishes * room_size

    def publish(index: int) -> None:
        bus.publish_to_room(rooms[index % len(rooms)], EVENT_TYPE, {"p": name, "t": clock()})

    cpu_before = cpu_seconds(gateway.pid)
    clients_before = sum(p.ask({"cmd": "count", "phase": name})["cpu"] for p in procs)
    if rate is None:
        first = clock()
        for index in range(publishes):
            publish(index)
    else:
        first = _paced(publish, publishes, rate / room_size)
    deadline = time.monotonic() + timeout
    while True:
        answers = [p.ask({"cmd": "count", "phase": name}) for p in procs]
        if sum(a["count"] for a in answers) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    cpu = cpu_seconds(gateway.pid) - cpu_before
    clients_cpu = sum(a["cpu"] for a in answers) - clients_before
    latencies: list[float] = []
    last = first
    for proc in procs:
        answer = proc.ask({"cmd": "collect", "phase": name})
        latencies += answer["samples"]
        if answer["last"] is not None:
            last = max(last, answer["last"])
    latencies.sort()
    span = last - first
    return GatewayPhase(
        scenario=scenario,
        mode=mode,
        room_size=room_size,
        publishes=publishes,
        offered_rate=rate,
        expected=expected,
        received=len(latencies),
        seconds=span,
        gateway_cpu=cpu,
        clients_cpu=clients_cpu,
        latencies=tuple(latencies),
    )


def run_gateway(
    url: str, settings: GatewaySettings | None = None, *, log_dir: Path | None = None
) -> GatewayResult:
    """Run the gateway benchmark against the Redis server at ``url``.

    Starts one gateway process and ``settings.client_processes`` client processes, and
    stops them all (by PID) before returning.

    Args:
        url: a ``redis://`` URL of a server that nothing else is using.
        settings: the counts (default: 1,000 connections, 2 client processes).
        log_dir: where the gateway writes its log (default: a temporary directory).
    """
    import tempfile

    from eventbus import EventBus

    settings = settings or GatewaySettings()
    started = time.perf_counter()
    tokens, rooms, small = _layout(settings)
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gw-")))
        gateway = stack.enter_context(GatewayProcess(url, log=log_dir / "gateway.log"))
        asyncio.run(_warm_up(gateway.url))
        time.sleep(0.5)
        rss_before = rss_kb(gateway.pid)
        _say(f"gateway pid {gateway.pid} on {gateway.url}, RSS {rss_before:,} KiB")
        procs = stack.enter_context(_clients(gateway.url, tokens, rooms, settings))
        connect_seconds = 0.0
        for proc in procs:
            connect_seconds = max(connect_seconds, proc.receive()["seconds"])
        time.sleep(1.0)  # let presence writes and the first heartbeat settle
        rss_after = rss_kb(gateway.pid)
        _say(
            f"{settings.connections:,} sockets connected in {connect_seconds:.1f} s, "
            f"RSS {rss_after:,} KiB"
        )
        bus = EventBus.from_url(url, service_name="bench-gateway")
        bus.connect()
        stack.callback(bus.disconnect, timeout=5.0)
        every = [f"{ROOM_PREFIX}all"]
        scenarios = [
            (f"{len(small)} rooms of {settings.room_size}", small, settings.room_size),
            (f"one room of {settings.connections:,}", every, settings.connections),
        ]
        phases: list[GatewayPhase] = []
        for scenario, targets, size in scenarios:
            slug = "rooms" if size == settings.room_size else "all"
            run = functools.partial(
                _run_phase, bus, gateway, procs, scenario=scenario, rooms=targets, room_size=size
            )
            per_s = settings.rate / size
            timeout = 10.0 + settings.seconds
            _say(f"{scenario}: warm-up")
            warm = max(1, round(per_s * settings.warmup))
            run(
                mode="warm-up",
                publishes=warm,
                rate=settings.rate,
                name=f"{slug}-warm",
                timeout=timeout,
            )
            _say(f"{scenario}: paced, {settings.rate:,.0f} deliveries/s offered")
            paced = max(1, round(per_s * settings.seconds))
            phases.append(
                run(
                    mode="paced",
                    publishes=paced,
                    rate=settings.rate,
                    name=f"{slug}-paced",
                    timeout=timeout,
                )
            )
            burst = max(1, settings.burst_deliveries // size)
            _say(f"{scenario}: burst of {burst * size:,} deliveries")
            wait = timeout + burst * size / 1000.0
            phases.append(
                run(mode="burst", publishes=burst, rate=None, name=f"{slug}-burst", timeout=wait)
            )
        dropped = sum(p.ask({"cmd": "count", "phase": ""})["dropped"] for p in procs)
    return GatewayResult(
        settings=settings,
        connections=settings.connections,
        client_processes=len(procs),
        rss_before_kb=rss_before,
        rss_after_kb=rss_after,
        connect_seconds=connect_seconds,
        phases=tuple(phases),
        dropped=dropped,
        elapsed=time.perf_counter() - started,
        load_after=load_average(),
    )


def _say(text: str) -> None:
    print(f"-- gateway: {text}", file=sys.stderr, flush=True)


# -- tables ----------------------------------------------------------------------------------

_PHASE_HEADERS = (
    "scenario",
    "run",
    "publishes",
    "deliveries received / expected",
    "deliveries/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "gateway CPU µs per delivery",
    "clients CPU µs per delivery",
)
_MEMORY_HEADERS = ("", "value")
_TARGET_HEADERS = ("target", "wanted", "measured", "result")


def _phase_rows(result: GatewayResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for p in result.phases:
        run = "burst" if p.offered_rate is None else f"paced, {p.offered_rate:,.0f}/s offered"
        rows.append(
            (
                p.scenario,
                run,
                f"{p.publishes:,}",
                f"{p.received:,} / {p.expected:,}",
                f"{p.deliveries_per_s:,.0f}",
                f"{p.quantile(0.50):.1f}",
                f"{p.quantile(0.90):.1f}",
                f"{p.quantile(0.99):.1f}",
                f"{p.max:.1f}",
                f"{p.cpu_us_per_delivery:.0f}",
                f"{p.clients_cpu_us_per_delivery:.0f}",
            )
        )
    return rows


def _memory_rows(result: GatewayResult) -> list[tuple[str, str]]:
    return [
        ("gateway RSS, warmed up, no socket", f"{result.rss_before_kb:,} KiB"),
        (
            f"gateway RSS, {result.connections:,} sockets, each in its user room + 2",
            f"{result.rss_after_kb:,} KiB",
        ),
        ("per connection", f"{result.kb_per_connection:.1f} KiB"),
        (
            f"time to connect and join ({result.client_processes} client processes, "
            f"{result.settings.concurrency} at once each)",
            f"{result.connect_seconds:.1f} s",
        ),
        ("sockets dropped during the run", str(result.dropped)),
    ]


def _target_rows(result: GatewayResult) -> list[tuple[str, str, str, str]]:
    return [(t, w, m, "pass" if ok else "MISS") for t, w, m, ok in result.targets()]


def render_text(result: GatewayResult) -> str:
    """The results as plain-text tables, for the terminal."""
    return "\n".join(
        [
            f"Gateway: {result.connections:,} WebSocket connections on one process",
            text_table(_MEMORY_HEADERS, _memory_rows(result)),
            "",
            "Publish -> socket",
            text_table(_PHASE_HEADERS, _phase_rows(result)),
            "",
            "Gateway targets",
            text_table(_TARGET_HEADERS, _target_rows(result)),
            "",
            f"({result.elapsed:.0f} s{', quick run' if result.settings.quick else ''}; "
            f"load average at the end {result.load_after})",
        ]
    )


def render_markdown_section(result: GatewayResult) -> str:
    """The gateway section of ``docs/benchmarks.md`` (MyST Markdown, starts with ``## ``)."""
    s = result.settings
    return f"""{SECTION_TITLE}

One `eventbus gateway` process (uvicorn with its `wsproto` WebSocket implementation,
python-socketio `AsyncServer`) on the same fresh `redis-server`, holding
{result.connections:,} WebSocket connections, each authenticated with its own token (HS256, `rooms: ["bench:*"]`) and joined to two rooms:
one of {s.room_size} sockets and one of all of them. The clients run in
{result.client_processes} separate processes; they share this machine's cores with the
gateway, Redis and the publisher, so their CPU is part of what is measured. Each socket
is a lean client on the `websockets` library (asyncio) that speaks the whole protocol
itself, on its own connection: the Engine.IO v4 handshake over WebSocket (`0{{...}}`
OPEN), the Socket.IO CONNECT with its own token (`40{{"token": ...}}`, answered `40`),
`join` of each room as an EVENT with an ack id, its ACK checked (`{{"ok": true}}`), a
PONG (`3`) for every Engine.IO PING (`2`), and every EVENT frame parsed with
`json.loads`. (python-socketio's `AsyncClient` did the same work at about twice the
CPU per delivery, which on 2 cores became most of the measured latency.) Regenerate
this section alone with
`python -m benchmarks.bench_gateway --write` (`--quick` for shorter phases).

**Memory**: the gateway's `VmRSS` once warmed up (one socket connected, joined and
gone), then 1 s after the last socket joined its rooms; the difference divided by
the number of sockets.

{markdown_table(_MEMORY_HEADERS, _memory_rows(result), right=(1,))}

**Delivery**: a Python `EventBus` on the same Redis calls `publish_to_room` with
`CLOCK_MONOTONIC` in the event's data (one clock for every process of the machine);
each socket reads the clock right after it has parsed that event's frame, so a
latency includes the client process's own queueing. *Paced* runs offer
{s.rate:,.0f} deliveries/s for {s.seconds:g} s (rooms chosen round-robin), after
{s.warmup:g} s of warm-up; *burst* runs publish as fast as one thread can and show
what the gateway delivers when it is the bottleneck (their latency is mostly queueing).
Deliveries/s counts from the first publish to the last delivery (so a paced run stays
a little under what it offered, by its last event's latency). The gateway's CPU is read
from `/proc/PID/stat` over each run, the clients' from `time.process_time()`.

{markdown_table(_PHASE_HEADERS, _phase_rows(result), right=(2, 3, 4, 5, 6, 7, 8, 9, 10))}

**Targets** of the issue (one gateway process on this 2-core machine):

{markdown_table(_TARGET_HEADERS, _target_rows(result))}

This section took {result.elapsed:.0f} s{" (a quick run)" if s.quick else ""}; the load
average at its end was {result.load_after}. The machine's speed moves severalfold with
its load, so compare only rows of the same run.
"""


def update_page(page: Path, section: str) -> None:
    """Replace the gateway section of ``page`` (from its heading to the end) by ``section``."""
    text = page.read_text(encoding="utf-8") if page.is_file() else "# Benchmarks\n"
    head, _sep, _old = text.partition("\n" + SECTION_TITLE + "\n")
    page.write_text(head.rstrip("\n") + "\n\n" + section, encoding="utf-8")


# -- the command -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gateway benchmark on a fresh redis-server; print it; ``--write`` the docs."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gateway", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1,000 connections, shorter phases")
    size.add_argument("--smoke", action="store_true", help="20 connections, a few seconds")
    parser.add_argument("--connections", type=int, help="override the number of sockets")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--output", type=Path, default=DOCS_PAGE, help="page to update")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        asyncio.run(_client_main())
        return 0
    settings = (
        GatewaySettings.for_smoke()
        if args.smoke
        else GatewaySettings.for_quick()
        if args.quick
        else GatewaySettings()
    )
    if args.connections:
        settings = dataclasses.replace(settings, connections=args.connections)
    from benchmarks._common import redis_server

    with redis_server() as server:
        _say(f"redis-server pid {server.pid} on {server.url}")
        result = run_gateway(server.url, settings)
    print(render_text(result))
    if args.write:
        update_page(args.output, render_markdown_section(result))
        _say(f"updated {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
