"""Real ``eventbus gateway`` processes for the tests, and tokens for them.

Start one against the test Redis, use its ``url`` with python-socketio, stop it::

    with start_gateway(redis_url) as gw:
        client = socketio.Client()
        client.connect(gw.url, auth={"token": gw.token("alice")}, transports=["websocket"])

The gateway runs as ``python -m eventbus gateway --port 0`` in its own process; the
helper waits for its "listening on" line (the port it got) and stops it by PID
(SIGTERM, then SIGKILL after a deadline). ``kill()`` is a crash (SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from eventbus.gateway import mint_token

__all__ = [
    "TEST_KEYS",
    "GatewayProcess",
    "gateway_token",
    "start_gateway",
    "wait_for",
]

#: Signing keys of every test gateway (kid -> secret, 32+ bytes).
TEST_KEYS: dict[str, str] = {
    "test-1": "test-secret-1-0123456789abcdef0123456789",
    "test-2": "test-secret-2-0123456789abcdef0123456789",
}
_READY = re.compile(r"listening on (http://\S+) \(node (\S+)\)")
_ROOT = Path(__file__).resolve().parent.parent


def keys_text(keys: Mapping[str, str]) -> str:
    """``{"k": "s"}`` as ``EVENTBUS_GATEWAY_KEYS`` writes it: ``k:s,...``."""
    return ",".join(f"{kid}:{secret}" for kid, secret in keys.items())


def gateway_token(
    user: str,
    *,
    rooms: Sequence[str] = (),
    ttl: float = 300.0,
    kid: str = "test-1",
    keys: Mapping[str, str] = TEST_KEYS,
    **claims: Any,
) -> str:
    """A token for ``user`` signed with the test key ``kid`` (extra kwargs: mint_token's)."""
    return mint_token(kid=kid, secret=keys[kid], sub=user, ttl=ttl, rooms=rooms, **claims)


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {condition}")
        time.sleep(interval)


class GatewayProcess:
    """A running ``eventbus gateway`` process (see the module docs)."""

    def __init__(self, proc: subprocess.Popen[bytes], workdir: Path) -> None:
        self.proc = proc
        self.workdir = workdir
        self.url = ""
        self.node_id = ""
        self.keys: dict[str, str] = dict(TEST_KEYS)

    @property
    def pid(self) -> int:
        """The gateway's process id."""
        return self.proc.pid

    @property
    def output(self) -> str:
        """What the process wrote so far (stdout, then stderr)."""
        out = (self.workdir / "stdout").read_text(errors="replace")
        err = (self.workdir / "stderr").read_text(errors="replace")
        return out + err

    def token(self, user: str, **options: Any) -> str:
        """A valid token for ``user`` (see :func:`gateway_token`)."""
        return gateway_token(user, keys=self.keys, **options)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search((self.workdir / "stdout").read_text(errors="replace"))
            if match:
                self.url, self.node_id = match.group(1), match.group(2)
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {self.proc.returncode} before listening:\n{self.output}"
                )
            time.sleep(0.02)
        raise RuntimeError(f"gateway not listening within {timeout}s:\n{self.output}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; return the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: a crash; nothing is cleaned up in Redis."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> GatewayProcess:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


def start_gateway(
    redis_url: str,
    *,
    keys: Mapping[str, str] = TEST_KEYS,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 20.0,
    **options: object,
) -> GatewayProcess:
    """Start ``eventbus gateway`` on a free port against ``redis_url``; wait until it listens.

    ``options`` become command-line options (``connect_rate=0`` -> ``--connect-rate 0``;
    ``origins="*"``); ``args`` are appended as is. Defaults for tests: a short
    heartbeat (0.5 s) and presence TTL (3 s), no connection rate limit.
    """
    defaults: dict[str, object] = {
        "connect_rate": 0,
        "heartbeat_interval": 0.5,
        "presence_ttl": 3,
    }
    defaults.update(options)
    argv = [sys.executable, "-m", "eventbus", "gateway", "--url", redis_url, "--port", "0"]
    for name, value in defaults.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    argv += list(args)
    workdir = Path(tempfile.mkdtemp(prefix="eventbus-gateway-"))
    environ = {**os.environ, "EVENTBUS_GATEWAY_KEYS": keys_text(keys), **(env or {})}
    environ.pop("EVENTBUS_URL", None)
    with (workdir / "stdout").open("wb") as out, (workdir / "stderr").open("wb") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=environ, cwd=_ROOT)
    gateway = GatewayProcess(proc, workdir)
    gateway.keys = dict(keys)
    try:
        gateway._wait_ready(timeout)
    except BaseException:
        gateway.kill()
        raise
    return gateway


@contextlib.contextmanager
def running_gateway(redis_url: str, **options: Any) -> Iterator[GatewayProcess]:
    """:func:`start_gateway` as a context manager that always stops it."""
    gateway = start_gateway(redis_url, **options)
    try:
        yield gateway
    finally:
        gateway.stop()
