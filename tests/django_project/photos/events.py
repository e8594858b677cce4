"""Handlers of the photos app (autodiscovered by eventbus.contrib.django)."""

from __future__ import annotations

import os
import threading
import time

from eventbus import Event, GroupOptions
from eventbus.contrib.django import bus
from photos.models import JobRun

#: Ids of the photo.uploaded events handled in this process (for in-process tests).
HANDLED: list[str] = []
HANDLED_CHANGED = threading.Condition()


@bus.on("photo.uploaded")
def announce_thumbnail(event: Event) -> None:
    """Fan-out: every worker process publishes a follow-up event."""
    with HANDLED_CHANGED:
        HANDLED.append(event.id)
        HANDLED_CHANGED.notify_all()
    bus.publish("photo.thumbnail.ready", {"photoId": event.data["photoId"], "pid": os.getpid()})


@bus.on("job.*", group="jobs", group_options=GroupOptions(max_in_flight=1, claim_idle=60))
def run_job(event: Event) -> None:
    """A slow durable-group handler that records its runs in the database.

    While the file named by ``TESTPROJECT_HOLD`` exists it waits (at most 30 s), so
    a test can stop the worker with a handler in flight.
    """
    run = JobRun.objects.create(
        event_id=event.id, job=event.data["job"], pid=os.getpid(), state="started"
    )
    hold = os.environ.get("TESTPROJECT_HOLD")
    deadline = time.monotonic() + 30
    while hold and os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.02)
    run.state = "done"
    run.save(update_fields=["state"])
