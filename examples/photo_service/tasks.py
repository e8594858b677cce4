"""The processing worker (service ``photo-worker``): a Celery app with an eventbus handler.

Run it with::

    celery -A examples.photo_service.tasks worker --pool prefork --concurrency 2

Two parts, in each prefork child process:

* an eventbus handler in the durable group ``photo-processing``: for each
  ``photo.uploaded`` (one child of one worker gets it, at least once), it enqueues
  the Celery task ``process_photo``;
* the task ``process_photo``: four simulated stages, a
  ``photo.processing.progress`` event to the room ``photo:<id>`` after each, then
  ``photo.processing.completed`` (or ``photo.processing.failed``).

Why the handler enqueues a task instead of processing in the handler: the web
process stays unaware of Celery (it publishes a fact; any number of services may
react to it), while the work itself gets what Celery is for: a queue that survives
restarts, concurrency limits, retries, time limits and ``celery inspect``. A bus
handler is best kept short: it runs on the bus's handler pool.

:class:`~eventbus.contrib.celery.EventBusCelery` connects ``bus`` in each pool process
after the fork, and disconnects it when the process exits; the main Celery process,
which only supervises, never connects.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from celery import Celery

from eventbus import Event, EventBus
from eventbus.contrib.celery import EventBusCelery
from examples.photo_service.photos import (
    PHOTO_UPLOADED,
    PROCESSING_COMPLETED,
    PROCESSING_FAILED,
    PROCESSING_GROUP,
    PROCESSING_PROGRESS,
    PROCESSING_STARTED,
    STAGES,
    PhotoStore,
    broker_url,
    bus_url,
    media_dir,
    now,
    photo_room,
    stage_seconds,
)

log = logging.getLogger("photo_service.tasks")

app = Celery("photo_service", broker=broker_url())
app.conf.update(
    task_ignore_result=True,  # progress and outcome travel as events, not results
    worker_prefetch_multiplier=1,  # tasks are long: do not hoard them in one child
    broker_connection_retry_on_startup=True,
)

bus = EventBus.from_url(bus_url(), service_name="photo-worker")
EventBusCelery(bus, app)  # connect in each pool process after fork, close at exit
store = PhotoStore.from_url(bus_url())  # redis-py reconnects by itself after a fork


@bus.on(PHOTO_UPLOADED, group=PROCESSING_GROUP)
def enqueue_processing(event: Event) -> None:
    """One process of the group gets each upload: hand it to Celery."""
    result = process_photo.delay(event.data["photoId"])
    log.info("photo %s uploaded: queued task %s", event.data["photoId"], result.id)


class ProcessingError(Exception):
    """A stage refused the photo (not retryable: the upload itself is bad)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


_FORMATS = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF8": "gif"}


def run_stage(stage: str, photo_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """Do one (simulated) processing stage; return what it learned about the photo."""
    time.sleep(stage_seconds())  # the "work"
    path = media_dir() / photo_id
    if stage == "validate":
        data = path.read_bytes()
        kind = next((name for magic, name in _FORMATS.items() if data.startswith(magic)), None)
        if kind is None:
            raise ProcessingError("UNSUPPORTED_FORMAT", "not a JPEG, PNG or GIF image")
        return {"format": kind, "checksum": hashlib.sha256(data).hexdigest()}
    if stage == "resize":
        return {"width": 1920, "height": 1080}  # pretend
    if stage == "thumbnail":
        thumbnail = path.with_name(f"{photo_id}.thumb")
        thumbnail.write_bytes(path.read_bytes()[: max(1, record["size"] // 10)])
        return {"thumbnail": thumbnail.name, "thumbnailSize": thumbnail.stat().st_size}
    return {"optimizedSize": record["size"] * 8 // 10}  # "optimize"


@app.task(name="photo_service.process_photo")
def process_photo(photo_id: str) -> None:
    """Process one uploaded photo, publishing its progress and outcome."""
    record = store.get(photo_id)
    if record is None:
        log.warning("photo %s: no such photo", photo_id)
        return
    if not store.claim(photo_id):
        # Groups deliver at least once: a second delivery of the upload lands here.
        log.info("photo %s: already %s", photo_id, record["status"])
        return
    user_id = record["userId"]
    ids = {"photoId": photo_id, "userId": user_id}
    started = time.monotonic()
    bus.publish(PROCESSING_STARTED, {**ids, "startedAt": now()})
    results: dict[str, Any] = {}
    try:
        for stage, progress in STAGES:
            results.update(run_stage(stage, photo_id, record))
            store.update(photo_id, stage=stage, progress=progress)
            # To the photo's room: the browsers showing this photo (through the
            # gateway), and any bus that joined the room.
            bus.publish_to_room(
                photo_room(photo_id),
                PROCESSING_PROGRESS,
                {**ids, "stage": stage, "progress": progress},
            )
    except ProcessingError as exc:
        store.update(photo_id, status="failed", error=exc.message)
        error = {"code": exc.code, "message": exc.message}
        bus.publish(PROCESSING_FAILED, {**ids, "error": error, "retryable": False})
        return
    except Exception as exc:
        store.update(photo_id, status="failed", error="internal error")
        error = {"code": "INTERNAL", "message": f"{type(exc).__name__}: {exc}"}
        bus.publish(PROCESSING_FAILED, {**ids, "error": error, "retryable": True})
        raise  # Celery logs it with its traceback
    store.update(photo_id, status="completed", **results)
    completed = {
        **ids,
        "completedAt": now(),
        "durationMs": round((time.monotonic() - started) * 1000),
        "thumbnail": {"name": results["thumbnail"], "size": results["thumbnailSize"]},
        "metadata": {k: results[k] for k in ("format", "width", "height", "checksum")},
    }
    bus.publish(PROCESSING_COMPLETED, completed)
