"""The photo service example (``examples/photo_service``), end to end and its upload API.

The end-to-end test runs the documented command, ``python -m examples.photo_service``,
against the test Redis: a real Flask server on a free port, a real Celery prefork
worker (2 pool processes, broker on database 1) and a real ``eventbus worker``. It
uploads over HTTP and watches with a bus of its own that joined the user's room and
the photo's room; at the end it stops the launcher with SIGTERM and checks that every
process exited cleanly. Whatever happens, every process it started is killed by PID
(each child of the launcher leads a process group of its own, which Celery's pool
processes share).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from eventbus import EventBus

from _helpers import Recorder, wait_for

ROOT = Path(__file__).resolve().parent.parent
JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(256)) * 4  # enough of a JPEG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Launcher:
    """``python -m examples.photo_service`` with its output in a file."""

    def __init__(self, redis_url: str, tmp_path: Path) -> None:
        self.redis_url = redis_url
        self.port = _free_port()
        self.media = tmp_path / "media"
        self.log_path = tmp_path / "launcher.log"
        self._log: IO[str] = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOTO_", "CELERY_"))}
        env.pop("LOG_LEVEL", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "examples.photo_service",
                "--redis",
                redis_url,
                "--port",
                str(self.port),
                "--media-dir",
                str(self.media),
                "--stage-seconds",
                "0.05",
                "--stop-timeout",
                "15",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def children(self) -> dict[str, int]:
        """The launcher's children, by name, as it announced them."""
        return {m[1]: int(m[2]) for m in re.finditer(r"started (\w+) \(pid (\d+)\)", self.log)}

    def wait_ready(self, timeout: float = 60.0) -> list[int]:
        """Wait for the ready banner; return the Celery pool pids it names."""

        def ready() -> re.Match[str] | None:
            assert self.proc.poll() is None, f"the launcher exited early:\n{self.log}"
            return re.search(r"photo service ready: .*\(pool ([\d, ]+)\)", self.log)

        try:
            found = wait_for(ready, timeout=timeout, what="the photo service to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its output:\n{self.log}") from None
        return [int(pid) for pid in found[1].split(", ")]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self, timeout: float = 45.0) -> int:
        """SIGTERM the launcher (it stops its children) and wait for it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill_everything(self) -> None:
        """Kill the launcher and the process group of each of its children, by id."""
        for pid in self.children().values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


@pytest.fixture
def launcher(redis_url: str, tmp_path: Path) -> Iterator[Launcher]:
    """The photo service on the test Redis; everything it started is killed at teardown."""
    started = Launcher(redis_url, tmp_path)
    try:
        yield started
    finally:
        started.kill_everything()


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    """(status, JSON body) of an HTTP request; errors are answers too."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _upload(url: str, user: str, content: bytes, filename: str, photo_id: str | None = None) -> Any:
    """POST a multipart upload, as ``curl -F photo=@FILE [-F photo_id=ID]`` does."""
    fields: dict[str, Any] = {"photo": FileStorage(io.BytesIO(content), filename=filename)}
    if photo_id is not None:
        fields["photo_id"] = photo_id
    boundary, body = encode_multipart(fields)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "X-User-Id": user,
    }
    return _request(url, body, headers)


def _story(recorder: Recorder, photo_id: str) -> list[tuple[str, str | None, str, Any]]:
    """What the observer saw about one photo: (type, room, source, progress), in order."""
    return [
        (e.type, e.room, e.source, e.data.get("progress"))
        for e in list(recorder.events)
        if isinstance(e.data, dict) and e.data.get("photoId") == photo_id
    ]


def test_upload_is_processed_with_progress_and_the_user_is_notified(launcher: Launcher) -> None:
    """upload -> photo.uploaded -> Celery task: started, progress 25..100 to the photo's
    room, completed -> notification.new to the user's room; a bad image -> failed ->
    a notification too; then SIGTERM stops every process with exit status 0."""
    pool = launcher.wait_ready()
    children = launcher.children()
    assert set(children) == {"web", "worker", "notify"}
    assert len(pool) == 2

    recorder = Recorder()
    observer = EventBus.from_url(
        launcher.redis_url, service_name="e2e-observer", shutdown_timeout=2.0
    )
    with observer:
        observer.subscribe("*", recorder)  # one subscription: events in arrival order
        observer.join_room("user:alice")  # what alice's browser gets (publish_to_user)
        observer.join_room("photo:p1")  # what a viewer of photo p1 gets (its progress)

        status, body = _upload(launcher.url("/photos"), "alice", JPEG, "cat.jpg", "p1")
        assert status == 202, body
        assert body["photoId"] == "p1"
        assert body["room"] == "photo:p1"
        status, body = _upload(launcher.url("/photos"), "alice", b"just text\n", "notes.txt")
        assert status == 202, body
        bad_id = body["photoId"]
        assert re.fullmatch(r"[0-9a-f]{32}", bad_id)  # generated by the server

        def notified() -> bool:
            return recorder.types.count("notification.new") >= 2

        try:
            wait_for(notified, timeout=30, what="two notifications")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: saw {recorder.types}\n{launcher.log}") from None

    progress = "photo.processing.progress"
    assert _story(recorder, "p1") == [
        ("photo.uploaded", None, "photo-api", None),
        ("photo.processing.started", None, "photo-worker", None),
        (progress, "photo:p1", "photo-worker", 25),
        (progress, "photo:p1", "photo-worker", 50),
        (progress, "photo:p1", "photo-worker", 75),
        (progress, "photo:p1", "photo-worker", 100),
        ("photo.processing.completed", None, "photo-worker", None),
        ("notification.new", "user:alice", "notification-service", None),
    ], launcher.log
    # The bad upload's progress went to its own room, which the observer did not join.
    assert _story(recorder, bad_id) == [
        ("photo.uploaded", None, "photo-api", None),
        ("photo.processing.started", None, "photo-worker", None),
        ("photo.processing.failed", None, "photo-worker", None),
        ("notification.new", "user:alice", "notification-service", None),
    ], launcher.log

    by_photo = {e.data["photoId"]: e for e in recorder.events if e.type == "notification.new"}
    ready, failed = by_photo["p1"], by_photo[bad_id]
    assert ready.user == "alice"
    assert ready.data["type"] == "photo_processed"
    assert ready.data["link"] == "/photos/p1"
    assert failed.data["type"] == "photo_failed"
    assert failed.data["message"] == "not a JPEG, PNG or GIF image"

    # The records say the same, and the thumbnail was written.
    status, record = _request(launcher.url("/photos/p1"))
    assert status == 200, record
    assert record["status"] == "completed"
    assert record["progress"] == 100
    assert record["userId"] == "alice"
    assert (launcher.media / record["thumbnail"]).stat().st_size == record["thumbnailSize"] > 0
    status, record = _request(launcher.url(f"/photos/{bad_id}"))
    assert (status, record["status"]) == (200, "failed")

    # SIGTERM: the launcher stops web, worker and notify, each exits 0.
    assert launcher.stop() == 0, launcher.log
    log = launcher.log
    for name in ("web", "worker", "notify"):
        assert f"launch | {name} exited with 0" in log, log
    assert "stopped cleanly" in log  # eventbus worker: nothing in flight was lost
    everyone = [*children.values(), *pool]
    wait_for(lambda: not any(map(_alive, everyone)), timeout=10, what="every process to exit")


# -- the upload API, in-process (Flask test client, memory:// bus) -----------------------------


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """``examples.photo_service.web`` (examples/ is not installed: import it from the repo)."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("PHOTO_SERVICE_MEDIA_DIR", str(tmp_path))
    return importlib.import_module("examples.photo_service.web")


def _form(photo_id: str | None = "p7", content: bytes = JPEG[:4]) -> dict[str, Any]:
    form: dict[str, Any] = {"photo": (io.BytesIO(content), "cat.jpg")}
    if photo_id is not None:
        form["photo_id"] = photo_id
    return form


def test_upload_api_checks_its_input_and_publishes(web: ModuleType, redis_url: str) -> None:
    """401 without a user, 400 without a file or with a bad id, 409 for a taken id,
    404 for an unknown photo; only the good upload publishes photo.uploaded."""
    app = web.create_app(
        {"EVENTBUS_URL": f"memory://test-{uuid.uuid4().hex}", "PHOTO_STORE_URL": redis_url}
    )
    try:
        bus = web.events.get_bus(app)
        recorder = Recorder()
        bus.subscribe("*", recorder)
        client = app.test_client()
        alice = {"X-User-Id": "alice"}

        assert client.post("/photos", data=_form()).status_code == 401
        assert client.post("/photos", data=_form(), headers={"X-User-Id": "a b"}).status_code == 401
        assert client.post("/photos", data={"photo_id": "p7"}, headers=alice).status_code == 400
        assert client.post("/photos", data=_form("no spaces"), headers=alice).status_code == 400
        first = client.post("/photos", data=_form(), headers=alice)
        assert first.status_code == 202, first.text
        assert first.json["photoId"] == "p7"
        assert client.post("/photos", data=_form(), headers=alice).status_code == 409
        assert client.get("/photos/nope").status_code == 404
        record = client.get("/photos/p7").json
        assert (record["status"], record["userId"], record["size"]) == ("uploaded", "alice", 4)
        bus.publish("test.done")  # after it, nothing else can still be on its way

        recorder.wait(2)
        assert recorder.types == ["photo.uploaded", "test.done"]
        event = recorder.events[0]
        assert event.id == first.json["eventId"]
        assert event.source == "photo-api"
        assert event.data == {
            "photoId": "p7",
            "userId": "alice",
            "filename": "cat.jpg",
            "size": 4,
            "mimeType": "image/jpeg",
        }
    finally:
        web.events.close(app)
        app.extensions["photo_store"].close()
