"""Start the whole photo service against a local Redis: ``python -m examples.photo_service``.

Run it from the repository root (the directory that holds ``examples/``)::

    python -m examples.photo_service --redis redis://localhost:6379/0

It starts three processes, each in a session of its own (so that Ctrl-C in the
terminal reaches only this launcher, which then stops them in order):

======  ==========================================================  =====================
name    command                                                     service
======  ==========================================================  =====================
web     ``python -m examples.photo_service.web``                    ``photo-api``
worker  ``celery -A examples.photo_service.tasks worker`` (prefork)   ``photo-worker``
notify  ``eventbus worker examples.photo_service.notifications``     ``notification-service``
======  ==========================================================  =====================

The bus and the photo records use the ``--redis`` database; the Celery broker the
next database (``/1`` for ``/0``) unless ``--broker`` says otherwise. Their output is
shown prefixed with their name. Once the durable groups are registered and every
process is connected, it prints ``photo service ready`` with how to upload and
watch. On Ctrl-C or SIGTERM it stops web, worker, then notify (SIGTERM each, then
SIGKILL after ``--stop-timeout``), and exits 0 if all three exited 0. If one of them
dies, it stops the others and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from eventbus import EventBus, EventBusError
from examples.photo_service.photos import DEFAULT_BUS_URL, GROUPS

ROOT = Path(__file__).resolve().parents[2]  # the directory that holds examples/
_output_lock = threading.Lock()


def say(name: str, line: str) -> None:
    """Print one line of output, prefixed with the name of who said it."""
    with _output_lock:
        print(f"{name:<6} | {line.rstrip()}", flush=True)


def broker_for(redis_url: str) -> str:
    """The Celery broker next to the bus: the same server, the next database."""
    parts = urllib.parse.urlsplit(redis_url)
    db = int(parts.path.strip("/") or 0)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db + 1}", query=""))


class Child:
    """One process of the service, its output pumped to ours with a prefix."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: Ctrl-C is ours to handle
        )
        assert self.proc.stdout is not None
        self._pump = threading.Thread(target=self._copy, args=(self.proc.stdout,), daemon=True)
        self._pump.start()
        say("launch", f"started {name} (pid {self.proc.pid}): {' '.join(argv[1:])}")

    def _copy(self, stream: IO[str]) -> None:
        for line in stream:
            say(self.name, line)

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.proc.pid

    def running(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float) -> int:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL its whole group."""
        if self.running():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say("launch", f"{self.name} did not stop within {timeout:g}s: SIGKILL")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # Also whatever it started (Celery's pool processes) and left behind.
            os.killpg(self.pid, signal.SIGKILL)
        code = self.proc.wait()
        self._pump.join(5.0)
        return code


class Stop(Exception):
    """SIGTERM or SIGINT arrived while starting."""


def start_children(args: argparse.Namespace) -> list[Child]:
    """Start worker, notify and web, in that order (consumers before the publisher)."""
    env = {
        **os.environ,
        "EVENTBUS_URL": args.redis,
        "CELERY_BROKER_URL": args.broker or broker_for(args.redis),
        "PYTHONUNBUFFERED": "1",
    }
    if args.media_dir:
        env["PHOTO_SERVICE_MEDIA_DIR"] = str(Path(args.media_dir).resolve())
    if args.stage_seconds is not None:
        env["PHOTO_SERVICE_STAGE_SECONDS"] = str(args.stage_seconds)
    python = sys.executable
    children = []
    try:
        # --without-gossip/mingle/heartbeat: one worker, nobody to talk to; starts faster.
        celery = [python, "-m", "celery", "-A", "examples.photo_service.tasks", "worker"]
        celery += ["--pool", "prefork", "--concurrency", str(args.concurrency)]
        celery += ["--loglevel", "INFO", "--hostname", "photo-worker@%h"]
        celery += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        children.append(Child("worker", celery, env))
        notify = [python, "-m", "eventbus", "worker", "examples.photo_service.notifications"]
        children.append(Child("notify", notify, env))
        web = [python, "-m", "examples.photo_service.web"]
        children.append(Child("web", [*web, "--host", args.host, "--port", str(args.port)], env))
    except BaseException:
        for child in children:
            child.stop(args.stop_timeout)
        raise
    return children


def wait_until_ready(
    args: argparse.Namespace, children: list[Child], stop: threading.Event
) -> list[int]:
    """Wait until groups, consumers and the web app are up; return the Celery pool pids.

    The web app must not publish before the durable groups exist: an upload published
    earlier would reach no group. So: groups registered, every consumer connected,
    then the first ``/healthz`` (which connects the web app's bus, and reads the group
    registry as it does).
    """
    worker, notify, _web = children
    deadline = time.monotonic() + args.start_timeout

    def check() -> None:
        if stop.is_set():
            raise Stop
        for child in children:
            if not child.running():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {args.start_timeout:g}s")
        time.sleep(0.1)

    with EventBus.from_url(args.redis, service_name="photo-launcher") as bus:
        while True:
            pool, notifiers = [], []
            for client in bus.get_clients():
                try:  # Celery's pool processes are in the Celery worker's process group
                    if (
                        client.service_name == "photo-worker"
                        and os.getpgid(client.pid) == worker.pid
                    ):
                        pool.append(client.pid)
                except (ProcessLookupError, PermissionError):
                    continue  # a stale record, or another host's
                if client.service_name == "notification-service" and client.pid == notify.pid:
                    notifiers.append(client.pid)
            groups = bus.get_group_patterns()
            if set(GROUPS) <= set(groups) and len(pool) >= args.concurrency and notifiers:
                break
            check()
    url = f"http://{args.host}:{args.port}/healthz"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                if response.status == 200:
                    return sorted(pool)
        except (urllib.error.URLError, OSError):
            pass
        check()


def banner(args: argparse.Namespace, children: list[Child], pool: list[int]) -> None:
    """Say where to upload and how to watch."""
    worker, notify, web = children
    base = f"http://{args.host}:{args.port}"
    lines = [
        f"photo service ready: web pid {web.pid}, worker pid {worker.pid} "
        f"(pool {', '.join(map(str, pool))}), notify pid {notify.pid}",
        "  upload (as user alice, choosing the photo id p1, optional):",
        f"    curl -H 'X-User-Id: alice' -F photo=@cat.jpg -F photo_id=p1 {base}/photos",
        "  its record (status, progress, thumbnail):",
        f"    curl {base}/photos/p1",
        "  watch alice's notifications and p1's progress (in another shell, before uploading):",
        f"    eventbus --url {args.redis} listen --room user:alice --room photo:p1",
        "  Ctrl-C stops everything.",
    ]
    for line in lines:
        say("launch", line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the launcher; return its exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.photo_service", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--redis", default=DEFAULT_BUS_URL, help="bus and photo records")
    parser.add_argument("--broker", help="Celery broker (default: the next database)")
    parser.add_argument("--host", default="127.0.0.1", help="web server address")
    parser.add_argument("--port", type=int, default=5000, help="web server port")
    parser.add_argument("--concurrency", type=int, default=2, help="Celery pool processes")
    parser.add_argument("--media-dir", help="uploads and thumbnails (default: a temp dir)")
    parser.add_argument("--stage-seconds", type=float, help="simulated work per stage")
    parser.add_argument("--start-timeout", type=float, default=60.0)
    parser.add_argument("--stop-timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.stage_seconds is not None and args.stage_seconds < 0:
        parser.error("--stage-seconds must be >= 0")

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    children = start_children(args)
    failed = False
    try:
        banner(args, children, wait_until_ready(args, children, stop))
        while not stop.wait(0.2):
            dead = [child for child in children if not child.running()]
            if dead:
                say("launch", f"{dead[0].name} exited with {dead[0].proc.returncode}")
                failed = True
                break
    except Stop:
        pass
    except (RuntimeError, EventBusError) as exc:
        say("launch", f"could not start: {exc}")
        failed = True
    say("launch", "stopping: web, then worker, then notify")
    worker, notify, web = children
    for child in (web, worker, notify):  # the publisher first, the last consumer last
        code = child.stop(args.stop_timeout)
        say("launch", f"{child.name} exited with {code}")
        failed = failed or code != 0
    say("launch", "stopped" + (" (with errors)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
