"""A real browser end to end: headless Chromium, the npm ``socket.io-client``, the gateway.

The test serves ``tests/browser/index.html`` and the npm package's
``dist/socket.io.min.js`` from a tiny HTTP server on a free loopback port, starts a
gateway process on the session Redis (with that page's origin allowed), and opens the
page in headless Chromium with the gateway's URL and a user token in the query string.
The page connects with ``io(url, {auth: {token}, transports: ["websocket"]})`` and
records every Socket.IO event it gets in ``window.received``. A Python ``EventBus`` on
the same Redis then sends ``publish_to_user``; the test reads the page through the
DevTools protocol (``Runtime.evaluate`` over the browser's WebSocket, no Playwright).

Needs Debian's ``chromium`` and ``npm ci`` in ``tests/browser``. Without them the test
is skipped with the reason, except when ``CI`` is set: then it fails, since a CI run
that skips its browser test proves nothing.
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from websockets.sync.client import ClientConnection, connect

from _gateway import start_gateway
from eventbus import EventBus

from _servers import in_ci

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
PAGE = BROWSER_DIR / "index.html"
CLIENT_JS = BROWSER_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: How long the browser and the gateway get for each step (the machine is slow when loaded).
STEP_TIMEOUT = 20.0


def _require(what: str, found: object) -> None:
    """Skip (fail under CI) when ``found`` is falsy."""
    if found:
        return
    if in_ci():
        pytest.fail(f"CI is set, so a missing browser prerequisite is an error: {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    """Debian's ``chromium`` on PATH, or a skip (a failure under CI)."""
    found = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    _require("needs Debian's chromium (apt-get install chromium)", found)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def client_js() -> Path:
    """The npm ``socket.io-client`` browser build, or a skip (a failure under CI)."""
    _require(
        f"needs {CLIENT_JS.relative_to(BROWSER_DIR.parent.parent)}: run "
        "`npm ci --no-audit --no-fund` in tests/browser",
        CLIENT_JS.is_file(),
    )
    return CLIENT_JS


# -- the page's HTTP server --------------------------------------------------------------


class _PageHandler(http.server.BaseHTTPRequestHandler):
    """Serves exactly two files: the page at ``/`` and the client at ``/socket.io.min.js``."""

    files: ClassVar[dict[str, tuple[Path, str]]] = {}

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        entry = self.files.get(path)
        if entry is None:
            self.send_error(404)
            return
        body = entry[0].read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", entry[1])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # quiet: pytest shows failures, not every request


@contextlib.contextmanager
def page_server(client: Path) -> Iterator[str]:
    """Serve the page and the client on a free loopback port; yield ``http://127.0.0.1:PORT``."""
    handler = type(
        "Handler",
        (_PageHandler,),
        {
            "files": {
                "/": (PAGE, "text/html; charset=utf-8"),
                "/index.html": (PAGE, "text/html; charset=utf-8"),
                "/socket.io.min.js": (client, "text/javascript; charset=utf-8"),
            }
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)


# -- Chromium and the DevTools protocol ----------------------------------------------------


class Browser:
    """Headless Chromium with a DevTools WebSocket to its one page; stopped by its PID."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary = binary
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = profile.parent / "chromium.log"
        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()

    def start(self) -> Browser:
        """Start Chromium on ``about:blank`` and connect to its page's DevTools socket."""
        args = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            text = port_file.read_text() if port_file.is_file() else ""
            if text.count("\n") >= 1 and text.split("\n", 1)[0].strip().isdigit():
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"chromium did not open its DevTools port:\n{self.log_tail()}")
            time.sleep(0.05)
        port = int(text.split("\n", 1)[0])
        page = self._page_target(port, deadline)
        # As a context manager: websockets 17 warns about a bare connect().
        self._ws = self._stack.enter_context(
            connect(page, open_timeout=STEP_TIMEOUT, max_size=None)
        )
        return self

    def _page_target(self, port: int, deadline: float) -> str:
        targets: list[dict[str, Any]] = []
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/json/list", timeout=5
                ) as reply:
                    targets = json.load(reply)
            except OSError:  # the port file can come before the HTTP endpoint answers
                targets = []
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium has no page target: {targets}")
            time.sleep(0.05)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        assert self._ws is not None
        ident = next(self._ids)
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") != ident:
                continue
            if "error" in message:
                raise AssertionError(f"DevTools {method} failed: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    def navigate(self, url: str) -> None:
        """Load ``url`` in the page and wait until its document is the one evaluated."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)}", f"the page to load {url}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = STEP_TIMEOUT) -> Any:
        """Poll ``expression`` until it is truthy; return its value, or fail with ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.evaluate(
                    "JSON.stringify({status: window.gatewayStatus, errors: window.errors, "
                    "received: window.received, body: document.body && document.body.innerText})"
                )
                raise AssertionError(f"timed out waiting for {what}; page state: {state}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Chromium's own output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Close the DevTools socket and stop Chromium by its PID (SIGTERM, then SIGKILL)."""
        self._ws = None
        with contextlib.suppress(Exception):
            self._stack.close()
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        helpers = _descendants(proc.pid) | set(_processes_naming(str(self.profile)))
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        self._reap(helpers)

    def _reap(self, helpers: set[int], timeout: float = 5.0) -> None:
        """Wait for Chromium's helper processes (its descendants, and any naming our
        profile) to exit; kill those still there after ``timeout``, by PID."""
        deadline = time.monotonic() + timeout
        while (alive := {pid for pid in helpers if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(root: int) -> set[int]:
    """PIDs of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _processes_naming(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def browser(chromium_binary: str) -> Iterator[Browser]:
    """A started headless Chromium with its own profile directory, stopped after the test."""
    # Chromium's helpers may still write to the profile for a moment after it exits:
    # the directory's removal must not fail the test for that.
    with tempfile.TemporaryDirectory(
        prefix="eventbus-chromium-", ignore_cleanup_errors=True
    ) as tmp:
        profile = Path(tmp) / "profile"
        profile.mkdir()
        chromium = Browser(chromium_binary, profile)
        try:
            chromium.start()
            yield chromium
        finally:
            chromium.stop()


# -- the test ----------------------------------------------------------------------------------


def _page_url(base: str, gateway: str, token: str) -> str:
    return f"{base}/?{urllib.parse.urlencode({'gateway': gateway, 'token': token})}"


def test_browser_receives_publish_to_user_and_is_refused_without_a_valid_token(
    redis_url: str, client_js: Path, browser: Browser
) -> None:
    """Chromium with the npm client connects with a user token, gets the event that a
    Python bus sent with publish_to_user to that user (and not one sent to another
    user), and a page with a bad token is refused with the code ``unauthorized``."""
    with page_server(client_js) as base, start_gateway(redis_url, origins=base) as gateway:
        browser.navigate(_page_url(base, gateway.url, gateway.token("alice")))
        status = browser.wait_for(
            "(window.gatewayStatus || 'connecting') !== 'connecting' && window.gatewayStatus",
            "the page to connect",
        )
        assert status == "connected", f"{status}; errors: {browser.evaluate('window.errors')}"
        with EventBus.from_url(redis_url, service_name="browser-test") as bus:
            # The same socket is in user:alice from its connect on (docs/gateway.md); one
            # event for another user first: pub/sub keeps order on one connection,
            # so by the time alice's arrives, bob's would have too.
            bus.publish_to_user("bob", "notification.created", {"text": "not for alice"})
            result = bus.publish_to_user(
                "alice", "notification.created", {"text": "hello alice", "n": 1}
            )
            received = browser.wait_for(
                "(window.received || []).length > 0 && window.received", "the published event"
            )
        shown = browser.evaluate(
            "Array.from(document.querySelectorAll('li.event')).map(e => e.textContent)"
        )
        assert len(received) == 1, received
        assert received[0]["name"] == "notification.created"
        envelope = received[0]["envelope"]
        assert envelope["type"] == "notification.created"
        assert envelope["data"] == {"text": "hello alice", "n": 1}
        assert envelope["specversion"] == "1.0"
        assert envelope["source"] == "browser-test"
        assert envelope["id"] == result.event_id
        assert shown == ['notification.created {"text":"hello alice","n":1}']

        browser.navigate(_page_url(base, gateway.url, "not-a-token"))
        refused = browser.wait_for(
            "(window.gatewayStatus || '').startsWith('refused:') && window.gatewayStatus",
            "the refusal of a bad token",
        )
        assert refused == "refused:unauthorized"
