"""The application module that ``tests/test_worker.py`` runs with ``eventbus worker``.

``python -m eventbus worker tests._worker_app`` (from the repository root) finds
``bus`` here. The bus comes from the environment (``EVENTBUS_URL``), as a real
service's would; each handler writes what it did into that same Redis, so the test
sees every handling, also across restarts:

* ``job.*`` (fan-out): ``RPUSH worker:fanout <event id>``; raises if ``data["fail"]``.
* ``task.*`` (durable group ``tasks``, one entry in flight at a time):
  ``RPUSH worker:started <id>``, sleeps ``data["sleep"]`` seconds, then
  ``HINCRBY worker:done <id> 1`` (how many times each event was handled) and
  ``RPUSH worker:pids <pid>``. ``data["block"]`` makes it wait for the key
  ``worker:release`` instead (at most 60 s), for the forced-exit test.
"""

from __future__ import annotations

import os
import time

import redis

from eventbus import Event, EventBus, GroupOptions

bus = EventBus.from_env(service_name="worker-app")
_redis = redis.Redis.from_url(os.environ["EVENTBUS_URL"])

TASKS = GroupOptions(batch_size=1, max_in_flight=1, block=0.1)


@bus.on("job.*")
def record_job(event: Event) -> None:
    """Fan-out: note the event, then fail if asked to."""
    _redis.rpush("worker:fanout", event.id)
    if isinstance(event.data, dict) and event.data.get("fail"):
        raise RuntimeError(f"job {event.id} asked to fail")


@bus.on("task.*", group="tasks", group_options=TASKS)
def run_task(event: Event) -> None:
    """Durable group: a slow task, counted per event id."""
    _redis.rpush("worker:started", event.id)
    data = event.data if isinstance(event.data, dict) else {}
    if data.get("block"):
        deadline = time.monotonic() + 60
        while not _redis.exists("worker:release") and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(float(data.get("sleep", 0)))
    _redis.hincrby("worker:done", event.id, 1)
    _redis.rpush("worker:pids", os.getpid())
