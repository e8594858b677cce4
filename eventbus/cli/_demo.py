"""``eventbus demo``: the photo pipeline of the Node README (examples 1-4), end to end.

Five buses run in this process on one broker, each standing in for a service:

- ``photo-api`` publishes ``photo.uploaded`` for two uploads (example 1);
- ``photo-worker`` handles ``photo.uploaded``: ``photo.processing.started``, one
  ``photo.processing.progress`` per stage (validation, resize, thumbnail, optimize),
  then ``photo.processing.completed``, or ``photo.processing.failed`` when a stage
  fails, as the second upload does (example 2);
- ``notification-service`` handles completed and failed and calls
  ``publish_to_user(userId, "notification.new", ...)`` (example 3);
- ``audit-log`` subscribes ``*.processing.*`` (example 4's pattern);
- ``browser`` stands in for the user's browser: it joins room ``user:user-456`` and
  shows the notifications it gets.

Each step is printed as it happens; the run waits for the events it expects with a
deadline (no sleeps wait for delivery: only the simulated work sleeps), then prints a
summary. Built only on the public API.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import attrs

from eventbus import Event, EventBus, EventBusConfig, EventBusError, Gap, TransportError
from eventbus.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_command,
    cannot_connect,
    speed,
)

__all__ = ["demo_config", "expected_deliveries", "run_demo"]

API = "photo-api"
WORKER = "photo-worker"
NOTIFIER = "notification-service"
AUDIT = "audit-log"
BROWSER = "browser"

USER_ID = "user-456"
STAGES = ("validation", "resize", "thumbnail", "optimize")
STAGE_WORK = 0.25
"""Seconds of simulated work per stage at ``speed=1.0``."""
DEADLINE = 10.0
"""Seconds the run waits for its events, on top of three times the simulated work."""
MAX_RESIZE_BYTES = 100_000_000
"""The worker's resize stage refuses larger images: how the second upload fails."""

UPLOADS: tuple[dict[str, Any], ...] = (
    {
        "photoId": "123",
        "userId": USER_ID,
        "filename": "vacation.jpg",
        "size": 1_024_000,
        "mimeType": "image/jpeg",
    },
    {
        "photoId": "124",
        "userId": USER_ID,
        "filename": "panorama.tiff",
        "size": 187_000_000,
        "mimeType": "image/tiff",
    },
)

_COMPLETED = "photo.processing.completed"
_FAILED = "photo.processing.failed"


class StageError(Exception):
    """A processing stage failed (the worker turns it into ``photo.processing.failed``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_stage(stage: str, upload: Mapping[str, Any]) -> None:
    """The worker's check at ``stage``; raises :class:`StageError` if the upload fails it."""
    if stage == "resize" and upload["size"] > MAX_RESIZE_BYTES:
        raise StageError(
            "IMAGE_TOO_LARGE",
            f"{upload['size'] / 1e6:.0f} MB is over the {MAX_RESIZE_BYTES / 1e6:.0f} MB "
            "resize limit",
        )


def _failing_stage(upload: Mapping[str, Any]) -> str | None:
    for stage in STAGES:
        try:
            check_stage(stage, upload)
        except StageError:
            return stage
    return None


def expected_deliveries() -> Counter[tuple[str, str]]:
    """How many events of each type each observing service should get in one run."""
    expected: Counter[tuple[str, str]] = Counter()
    for upload in UPLOADS:
        failed_at = _failing_stage(upload)
        done = STAGES.index(failed_at) if failed_at else len(STAGES)
        outcome = _FAILED if failed_at else _COMPLETED
        expected[WORKER, "photo.uploaded"] += 1
        expected[AUDIT, "photo.processing.started"] += 1
        expected[AUDIT, "photo.processing.progress"] += done
        expected[AUDIT, outcome] += 1
        expected[NOTIFIER, outcome] += 1
        expected[BROWSER, "notification.new"] += 1
    return expected


def demo_config(base: EventBusConfig, run_id: str) -> EventBusConfig:
    """``base`` on a broker of its own: a fresh ``memory://`` name, or a unique Redis prefix."""
    if base.transport_url.startswith("memory:"):
        return attrs.evolve(base, url=f"memory://demo-{run_id}", redis=None)
    if base.redis is not None:
        prefix = f"{base.redis.key_prefix}demo-{run_id}:"
        return attrs.evolve(base, redis=attrs.evolve(base.redis, key_prefix=prefix))
    return base


_SERVICES = (API, WORKER, NOTIFIER, AUDIT, BROWSER)
_TYPES = (
    "photo.uploaded",
    "photo.processing.started",
    "photo.processing.progress",
    _COMPLETED,
    _FAILED,
    "notification.new",
)


def _pipeline_order(key: tuple[str, str]) -> tuple[int, int, str]:
    service, event_type = key
    rank = _TYPES.index(event_type) if event_type in _TYPES else len(_TYPES)
    return _SERVICES.index(service), rank, event_type


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class _Demo:
    """One run: the buses, the printer, and the ledger of what arrived."""

    def __init__(self, config: EventBusConfig, *, speed: float, out: TextIO) -> None:
        self._config = config
        self._speed = speed
        self._out = out
        self._lock = threading.Condition()
        self._started = time.monotonic()
        self.seen: Counter[tuple[str, str]] = Counter()
        self.errors: list[str] = []
        self.buses: dict[str, EventBus] = {}

    # -- output and bookkeeping ------------------------------------------------------------

    def say(self, service: str, verb: str, what: str, detail: str = "") -> None:
        """Print one step: elapsed time, service, verb, event type, short detail."""
        with self._lock:  # the clock read inside: printed times never go backwards
            elapsed = time.monotonic() - self._started
            line = f"{elapsed:7.3f}s  {service:<20}  {verb:<10}  {what:<26}  {detail}"
            print(line.rstrip(), file=self._out, flush=True)

    def _record(self, service: str, event: Event) -> None:
        with self._lock:
            self.seen[service, event.type] += 1
            self._lock.notify_all()

    def _fail(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
            print(f"  !!!  {message}", file=self._out, flush=True)
            self._lock.notify_all()

    def wait_for(self, expected: Counter[tuple[str, str]], timeout: float) -> bool:
        """Wait until every expected delivery arrived (or an error); False on timeout."""

        def done() -> bool:
            return bool(self.errors) or all(self.seen[k] >= n for k, n in expected.items())

        with self._lock:
            return self._lock.wait_for(done, timeout)

    def _send(
        self,
        service: str,
        event_type: str,
        data: dict[str, Any],
        detail: str,
        *,
        user: str | None = None,
    ) -> None:
        """Print the step, then publish (so receivers never print before it)."""
        bus = self.buses[service]
        self.say(service, "sends", event_type, f"{detail} (to user {user})" if user else detail)
        try:
            if user is None:
                bus.publish(event_type, data)
            else:
                bus.publish_to_user(user, event_type, data)
        except EventBusError as exc:
            self._fail(f"{service} could not publish {event_type}: {exc}")

    def _work(self, seconds: float) -> None:
        if seconds * self._speed > 0:
            time.sleep(seconds * self._speed)  # simulated work, not a wait for delivery

    # -- the services ----------------------------------------------------------------------

    def on_upload(self, event: Event) -> None:
        """photo-worker (README example 2): process an upload stage by stage."""
        data = event.data
        photo_id, user_id = data["photoId"], data["userId"]
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        self.say(WORKER, "gets", event.type, f"photo {photo_id} {data['filename']} -> {job_id}")
        self._record(WORKER, event)
        started = time.monotonic()
        ids = {"photoId": photo_id, "userId": user_id, "jobId": job_id}
        estimate = round(STAGE_WORK * len(STAGES) * self._speed * 1000)
        self._send(
            WORKER,
            "photo.processing.started",
            {**ids, "startedAt": _now(), "estimatedDuration": estimate},
            f"photo {photo_id} {job_id}",
        )
        stage = STAGES[0]
        try:
            for number, stage in enumerate(STAGES, 1):
                self._work(STAGE_WORK)
                check_stage(stage, data)
                progress = number * 100 // len(STAGES)
                self._send(
                    WORKER,
                    "photo.processing.progress",
                    {**ids, "progress": progress, "stage": stage},
                    f"photo {photo_id} {stage} {progress}%",
                )
        except StageError as exc:
            error = {"code": exc.code, "message": exc.message, "details": {"stage": stage}}
            self._send(
                WORKER,
                _FAILED,
                {**ids, "failedAt": _now(), "error": error, "retryable": False},
                f"photo {photo_id} at {stage}: {exc.code}",
            )
            return
        duration = round((time.monotonic() - started) * 1000)
        thumbnails = [
            {"size": size, "key": f"thumbs/{photo_id}-{size}.jpg"} for size in (150, 600, 1200)
        ]
        self._send(
            WORKER,
            _COMPLETED,
            {
                **ids,
                "completedAt": _now(),
                "duration": duration,
                "thumbnails": thumbnails,
                "metadata": {"width": 4032, "height": 3024, "format": "jpeg"},
                "storageInfo": {"bucket": "photos", "key": f"originals/{photo_id}.jpg"},
            },
            f"photo {photo_id} in {duration} ms, {len(thumbnails)} thumbnails",
        )

    def on_outcome(self, event: Event) -> None:
        """notification-service (README example 3): tell the user how it went."""
        data = event.data
        photo_id, user_id = data["photoId"], data["userId"]
        self.say(NOTIFIER, "gets", event.type, f"photo {photo_id}")
        self._record(NOTIFIER, event)
        if event.type == _COMPLETED:
            note = {
                "type": "photo_processed",
                "title": "Your photo is ready!",
                "message": "Photo processing completed successfully",
                "photoId": photo_id,
                "link": f"/photos/{photo_id}",
                "timestamp": _now(),
            }
        else:
            note = {
                "type": "photo_processing_failed",
                "title": "Photo processing failed",
                "message": f"Failed to process your photo: {data['error']['message']}",
                "photoId": photo_id,
                "severity": "error",
                "timestamp": _now(),
            }
        self._send(NOTIFIER, "notification.new", note, repr(note["title"]), user=user_id)

    def on_processing(self, event: Event) -> None:
        """audit-log (README example 4): every ``*.processing.*`` event."""
        self.say(AUDIT, "gets", event.type, f"photo {event.data['photoId']} from {event.source}")
        self._record(AUDIT, event)

    def on_notification(self, event: Event) -> None:
        """The browser: show a notification that reached its user room."""
        data = event.data
        self.say(BROWSER, "shows", event.type, f"{data['title']} - {data['message']}")
        self._record(BROWSER, event)

    def on_error(self, service: str) -> Callable[[EventBusError, Event | None], None]:
        """An error hook for ``service``'s bus: every error fails the run."""

        def hook(error: EventBusError, event: Event | None) -> None:
            cause = f" ({error.__cause__!r})" if error.__cause__ else ""
            self._fail(f"{service}: {error}{cause}")

        return hook

    def on_gap(self, service: str) -> Callable[[Gap], None]:
        """A gap hook for ``service``'s bus: print it (the ledger shows what is missing)."""

        def hook(gap: Gap) -> None:
            self.say(service, "gap", gap.reason, gap.detail)

        return hook

    # -- the run ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Build and connect the five buses; subscriptions are live when this returns."""
        for service in _SERVICES:
            bus = EventBus(attrs.evolve(self._config, service_name=service))
            bus.on_error(self.on_error(service))
            bus.on_gap(self.on_gap(service))
            self.buses[service] = bus
        self.buses[WORKER].subscribe("photo.uploaded", self.on_upload)
        self.buses[NOTIFIER].subscribe(_COMPLETED, self.on_outcome)
        self.buses[NOTIFIER].subscribe(_FAILED, self.on_outcome)
        self.buses[AUDIT].subscribe("*.processing.*", self.on_processing)
        self.buses[BROWSER].join_room(f"user:{USER_ID}")
        self.buses[BROWSER].subscribe("notification.*", self.on_notification)
        for bus in self.buses.values():
            bus.connect()  # returns once the server confirmed its subscriptions
        self.say(WORKER, "subscribes", "photo.uploaded")
        self.say(NOTIFIER, "subscribes", f"{_COMPLETED}, {_FAILED}")
        self.say(AUDIT, "subscribes", "*.processing.*")
        self.say(BROWSER, "joins", f"room user:{USER_ID}", "and subscribes notification.*")

    def upload(self) -> None:
        """photo-api (README example 1): two uploads, a moment apart."""
        for number, upload in enumerate(UPLOADS):
            if number:
                self._work(STAGE_WORK / 2)
            data = {**upload, "uploadedAt": _now()}
            size = f"{upload['size'] / 1e6:.1f} MB"
            detail = f"photo {upload['photoId']} {upload['filename']} {size} by {USER_ID}"
            self._send(API, "photo.uploaded", data, detail)

    def wait_idle(self, timeout: float) -> None:
        """Wait until every bus handled what it received, so the stats are final."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = [bus.get_stats() for bus in self.buses.values()]
            if all(s.events_handled + s.events_failed >= s.events_received for s in stats):
                return
            time.sleep(0.01)

    def disconnect(self) -> None:
        """Disconnect every bus (each drains its handlers first)."""
        for bus in self.buses.values():
            bus.disconnect(timeout=2.0)

    def summary(self, expected: Counter[tuple[str, str]], arrived: bool) -> bool:
        """Print deliveries, stats and health; True if the run succeeded."""
        lines: list[str] = []
        elapsed = time.monotonic() - self._started
        lines.append(f"\nsummary after {elapsed:.2f} s")
        lines.append("  deliveries (service, event type, got/expected):")
        problems = list(self.errors)
        keys = [*expected, *(key for key in self.seen if key not in expected)]
        for service, event_type in sorted(keys, key=_pipeline_order):
            got, want = self.seen[service, event_type], expected[service, event_type]
            mark = "ok" if got == want else "MISSING" if got < want else "UNEXPECTED"
            lines.append(f"    {service:<20}  {event_type:<26}  {got}/{want}  {mark}")
            if got != want:
                problems.append(f"{service} got {got} of {want} {event_type}")
        lines.append("  bus stats (get_stats):")
        lines.append(
            f"    {'service':<20}  {'pub':>4}  {'recv':>4}  {'handled':>7}  {'failed':>6}  "
            f"{'dropped':>7}  handler p50/p99 ms"
        )
        for service, bus in self.buses.items():
            s = bus.get_stats()
            p50 = "-" if s.handler_p50_ms is None else f"{s.handler_p50_ms:.2f}"
            p99 = "-" if s.handler_p99_ms is None else f"{s.handler_p99_ms:.2f}"
            lines.append(
                f"    {service:<20}  {s.events_published:>4}  {s.events_received:>4}  "
                f"{s.events_handled:>7}  {s.events_failed:>6}  {s.events_dropped:>7}  "
                f"{p50}/{p99}"
            )
        lines.append("  health (health_check):")
        for service, bus in self.buses.items():
            health = bus.health_check()
            transport = health.checks.get("transport")
            detail = transport.detail if transport is not None else ""
            lines.append(f"    {service:<20}  {health.status:<9}  {detail}")
        if not arrived and not self.errors:
            problems.insert(0, "the deadline passed before every expected event arrived")
        if problems:
            lines.append("FAILED:")
            for problem in dict.fromkeys(problems):
                lines.append(f"  - {problem}")
        else:
            total = sum(expected.values())
            lines.append(f"OK: all {total} expected deliveries arrived")
        with self._lock:  # in one piece, even if a late handler is still printing
            print("\n".join(lines), file=self._out, flush=True)
        return not problems


def run_demo(config: EventBusConfig, *, speed: float = 1.0, out: TextIO | None = None) -> bool:
    """Run the photo pipeline on ``config``'s transport; True if every expected event arrived.

    ``config`` names the transport (``service_name`` is replaced per service); a
    ``memory://`` transport gets a fresh broker name and Redis a key prefix unique to
    the run (see :func:`demo_config`), so concurrent demos never mix. ``speed``
    multiplies the simulated work (0.1 is ten times faster). Output goes to ``out``
    (default stdout).

    Raises:
        TransportError: a bus could not connect.
        ConfigurationError: the transport is not usable (e.g. not supported yet).

    Failures after the buses connected are printed and make the result False.
    """
    out = sys.stdout if out is None else out
    run_id = uuid.uuid4().hex[:8]
    config = demo_config(config, run_id)
    expected = expected_deliveries()
    work = STAGE_WORK * len(STAGES) * len(UPLOADS) * speed
    demo = _Demo(config, speed=speed, out=out)
    where = config.transport_url
    if config.redis is not None:
        where += f" (key prefix {config.redis.key_prefix})"
    print(
        "eventbus demo: the photo pipeline of the Node README, examples 1-4\n"
        f"run {run_id} on {where}\n",
        file=out,
        flush=True,
    )
    try:
        demo.connect()
        demo.upload()
        arrived = demo.wait_for(expected, timeout=DEADLINE + 3 * work)
        demo.wait_idle(timeout=2.0)
        return demo.summary(expected, arrived)
    finally:
        demo.disconnect()


def add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``eventbus`` command."""
    demo = add_command(
        commands,
        "demo",
        _run_demo,
        "run the photo pipeline of the Node README, end to end",
        "Run the photo pipeline (photo-api, photo-worker, notification-service, a "
        "browser in room user:user-456, an audit subscriber on *.processing.*) as buses "
        "in this process, printing each step, then a summary. Uses a fresh memory:// "
        "broker unless --url or the environment names another transport (Redis gets a "
        "key prefix unique to the run). Exits 1 if an expected event did not arrive.",
    )
    demo.add_argument(
        "--speed",
        metavar="F",
        type=speed,
        default=1.0,
        help="multiplies the simulated work time: 0.1 runs ten times faster, 0 skips it "
        "(default: %(default)s)",
    )


def _run_demo(args: argparse.Namespace, config: EventBusConfig) -> int:
    try:
        ok = run_demo(config, speed=args.speed, out=sys.stdout)
    except TransportError as exc:  # run_demo lets only connect failures through
        raise cannot_connect(config, exc) from exc
    return EXIT_OK if ok else EXIT_FAILURE
