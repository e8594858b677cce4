"""The Celery app that ``tests/test_contrib_celery.py`` runs in a real worker.

``celery -A tests._celery_app worker`` (from the repository root). The broker is
``CELERY_BROKER_URL``, the bus ``EVENTBUS_URL`` (two databases of the test Redis);
what happens is written into the bus's database, so the test can read it:

* ``celery:ready``: ``<pid>:<ppid>:<connected>`` for each prefork child ready to work
  (on ``worker_process_init``, after EventBusCelery's receiver);
* ``celery:main``: the same for the worker's main process (on ``worker_ready``);
* ``celery:down``: the same, as each process shuts down (after EventBusCelery's
  receiver, so ``connected`` says whether it disconnected the bus);
* ``celery:orders`` (hash): how many times each ``order.*`` event was handled by the
  durable group ``orders``; ``celery:order-pids``: ``<pid>:<ppid>`` of the handlers;
* ``celery:ping:<event id>`` (set): the pids whose fan-out handler got that event.

The task ``publish_progress(photo_id, steps)`` publishes ``photo.progress`` events.
"""

from __future__ import annotations

import os

import redis
from celery import Celery, signals

from eventbus import Event, EventBus, GroupOptions
from eventbus.contrib.celery import EventBusCelery

app = Celery("eventbus_test", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_ignore_result=True,
)
bus = EventBus.from_env(service_name="celery-app")
events = EventBusCelery(bus, app)
_redis = redis.Redis.from_url(os.environ["EVENTBUS_URL"])

ORDERS = GroupOptions(batch_size=5, max_in_flight=5, block=0.1)


def _whoami() -> str:
    return f"{os.getpid()}:{os.getppid()}"


@bus.on("order.*", group="orders", group_options=ORDERS)
def count_order(event: Event) -> None:
    """Durable group: count each event, note the process."""
    _redis.hincrby("celery:orders", event.id, 1)
    _redis.sadd("celery:order-pids", _whoami())


@bus.on("ping.*")
def note_ping(event: Event) -> None:
    """Fan-out: every process that runs handlers notes every ping."""
    _redis.sadd(f"celery:ping:{event.id}", os.getpid())


@app.task(name="publish_progress")
def publish_progress(photo_id: str, steps: int = 4) -> str:
    """A task reporting its progress on the bus."""
    for step in range(1, steps + 1):
        bus.publish(
            "photo.progress",
            {"photoId": photo_id, "progress": step * 100 // steps, "pid": os.getpid()},
        )
    return photo_id


@signals.worker_process_init.connect
def _child_ready(**_: object) -> None:
    _redis.rpush("celery:ready", f"{_whoami()}:{bus.is_connected()}")


@signals.worker_ready.connect
def _worker_ready(**_: object) -> None:
    _redis.rpush("celery:main", f"{_whoami()}:{bus.is_connected()}")


@signals.worker_process_shutdown.connect
def _child_down(**_: object) -> None:
    _redis.rpush("celery:down", f"{_whoami()}:{bus.is_connected()}")


@signals.worker_shutdown.connect
def _worker_down(**_: object) -> None:
    _redis.rpush("celery:down", f"{_whoami()}:{bus.is_connected()}")
