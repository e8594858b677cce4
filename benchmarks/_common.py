"""What every benchmark shares: the Redis server, a draining subscriber, tables, machine info.

Nothing here is timed. The benchmarks compare ``eventbus`` with raw redis-py side by side
in one run against one freshly started ``redis-server``; absolute numbers move 3-5x with
the machine's load (DESIGN.md §10), so only the comparisons within one run mean anything.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

__all__ = [
    "BENCH_DATA",
    "ROOT",
    "DrainSubscriber",
    "MachineInfo",
    "envelope_like",
    "load_average",
    "machine_info",
    "markdown_table",
    "median",
    "percentile",
    "redis_server",
    "text_table",
]

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "tests"

#: The ``data`` of every benchmark event: a small, typical payload (~120 bytes of JSON).
BENCH_DATA: dict[str, Any] = {
    "photoId": "ph_8c1f6d2e4b7a",
    "userId": "user-456",
    "size": 1_234_567,
    "contentType": "image/jpeg",
    "tags": ["beach", "sunset"],
    "priority": "high",
}


@contextlib.contextmanager
def redis_server() -> Iterator[Any]:
    """A fresh ``redis-server`` on a free loopback port (never 6379), stopped by PID.

    Uses :class:`RedisServer` from ``tests/_servers.py`` (the test suite's own helper):
    no persistence, its own temporary directory, SIGTERM to its PID on exit.
    """
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    from _servers import RedisServer  # only the runner needs a server: import it late

    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


_DRAIN_SCRIPT = r"""
import socket, sys
host, port, pattern = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
sock = socket.create_connection((host, port))
sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pattern), pattern))
seen = b""
while b":1\r\n" not in seen:
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit(1)
    seen += chunk
sys.stdout.write("ready\n")
sys.stdout.flush()
buf = bytearray(1 << 20)
while sock.recv_into(buf):
    pass
"""


class DrainSubscriber:
    """A separate process that ``PSUBSCRIBE``s ``pattern`` and reads and discards everything.

    It makes every PUBLISH do real fan-out work in Redis (format the message, write it
    to a socket) without competing for this process's GIL, and it reads fast enough
    that Redis never cuts it off for a full output buffer. Stopped by its PID.

    Example::

        with DrainSubscriber("redis://127.0.0.1:6380/0", "eventbus:ev:*"):
            r.publish("eventbus:ev:x", b"...")  # returns 1
    """

    def __init__(self, url: str, pattern: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.pattern = pattern
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> DrainSubscriber:
        parts = urlsplit(self.url)
        args = [sys.executable, "-c", _DRAIN_SCRIPT, parts.hostname or "127.0.0.1"]
        args += [str(parts.port or 6379), self.pattern]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # blocks until subscribed (or the child died)
        if line.strip() != "ready":
            self.__exit__(None, None, None)
            raise RuntimeError(f"the draining subscriber did not subscribe to {self.pattern!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def envelope_like(
    seq: int, event_type: str, data: Any, *, source: str, publisher: str
) -> dict[str, Any]:
    """What a hand-rolled publisher would send: an envelope-shaped dict of our envelope's size.

    Same keys as the ``eventbus`` envelope; the id is a counter and the time a float, the
    least a publisher does per message (``eventbus`` pays for a ULID and RFC 3339 time).
    """
    return {
        "specversion": "1.0",
        "id": f"{seq:026d}",
        "source": source,
        "type": event_type,
        "time": time.time(),
        "datacontenttype": "application/json",
        "ebpub": publisher,
        "data": data,
        "ebseq": seq,
    }


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of an already sorted, non-empty sequence."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return ordered[rank - 1]


@dataclass(frozen=True, kw_only=True)
class MachineInfo:
    """Where and with what the benchmarks ran."""

    cpu: str
    cores: int
    usable_cores: int
    load_average: str
    python: str
    redis_py: str
    redis_server: str
    platform: str
    date: str

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs, for a table."""
        return [
            ("CPU", self.cpu),
            ("cores (usable by this process)", f"{self.cores} ({self.usable_cores})"),
            ("load average at the start (1, 5, 15 min)", self.load_average),
            ("Python", self.python),
            ("redis-py", self.redis_py),
            ("redis-server", self.redis_server),
            ("platform", self.platform),
            ("date (UTC)", self.date),
        ]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as text ("unknown" where there are none)."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def machine_info(url: str) -> MachineInfo:
    """Describe this machine and the Redis server at ``url`` (asked with ``INFO server``)."""
    client = redis.Redis.from_url(url, socket_timeout=5.0)
    try:
        info = client.info("server")
    finally:
        client.close()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return MachineInfo(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 1,
        usable_cores=usable,
        load_average=load_average(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        redis_py=redis.__version__,
        redis_server=str(info.get("redis_version", "unknown")),
        platform=platform.platform(),
        date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
    )


def _cell(value: object) -> str:
    # Table cells must not break the Markdown table (no pipes, no newlines).
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[int] = ()
) -> str:
    """A GitHub/MyST Markdown table; columns whose index is in ``right`` align right."""
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns, for the terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells[1:]]
    return "\n".join(out)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (to show that the payloads compare)."""
    return len(json.dumps(value, separators=(",", ":")).encode())
