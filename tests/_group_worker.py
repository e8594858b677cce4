"""A durable-group worker process for ``tests/test_groups_processes.py``.

Run as ``python -m _group_worker URL --out FILE [options]`` (``tests/`` on ``PYTHONPATH``).
It makes its own bus, subscribes one handler (``--group NAME`` for a durable group,
none for a fan-out subscription) and appends one JSON line per fact to ``--out``,
flushed at once, so the test can read it while the worker runs and after a SIGKILL:

* ``{"kind": "ready", "pid", "client_id", "consumer"}`` once subscribed;
* ``{"kind": "event", "data", "id", "type", "attempt", "group"}`` per event handled
  (with ``--fail``: ``"kind": "failed"``, written before the handler raises);
* ``{"kind": "gap", "reason", "missed", "detail"}`` per ``on_gap`` report;
* ``{"kind": "stats", "in_flight", "dropped", "read", "acked", "redelivered",
  "dead_lettered", "lost"}`` each time the group's counters (or the bus's
  ``events_dropped``) change, checked every 50 ms;
* ``{"kind": "stopping"}`` on SIGTERM, ``{"kind": "exit"}`` once it disconnected.

SIGUSR1 dumps every thread's stack to stderr (``faulthandler``).

The ``eventbus`` log (WARNING and up) goes to stderr.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from eventbus import Event, EventBus, Gap, GroupOptions


class Output:
    """One JSON line per record, appended and flushed under a lock."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, **fields}) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="_group_worker")
    parser.add_argument("url")
    parser.add_argument("--out", required=True)
    parser.add_argument("--service", default="group-worker")
    parser.add_argument("--pattern", default="order.*")
    parser.add_argument("--group", help="a durable group; without it, a fan-out subscription")
    parser.add_argument("--claim-idle", type=float, default=30.0)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--maxlen", type=int, default=100_000, help="0: no retention limit")
    parser.add_argument("--block", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each event takes")
    parser.add_argument("--fail", action="store_true", help="the handler always raises")
    parser.add_argument("--hold", help="the handler waits until this file exists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    faulthandler.register(signal.SIGUSR1)  # the test asks for stacks before a SIGKILL
    out = Output(args.out)
    stop = threading.Event()  # set once SIGTERM came: a held handler lets go
    # The handler only flips a flag: a signal handler runs in the main thread between two
    # bytecodes, and Event.set() there deadlocks when it lands while that thread holds
    # the Event's (non-reentrant) lock inside Event.wait().
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: terminated.append(signum))

    bus = EventBus.from_url(args.url, service_name=args.service)

    def on_gap(gap: Gap) -> None:
        out.write("gap", reason=gap.reason, missed=gap.missed, detail=gap.detail)

    bus.on_gap(on_gap)

    def handle(event: Event) -> None:
        record = {
            "data": event.data,
            "id": event.id,
            "type": event.type,
            "attempt": event.delivery_attempt,
            "group": event.group,
        }
        if args.fail:
            out.write("failed", **record)
            raise RuntimeError("thumbnail service down")
        out.write("event", **record)
        if args.hold:
            while not Path(args.hold).exists() and not stop.is_set():
                time.sleep(0.01)
        if args.sleep:
            time.sleep(args.sleep)

    bus.connect()
    if args.group is None:
        bus.subscribe(args.pattern, handle)
        consumer = None
    else:
        options = GroupOptions(
            claim_idle=args.claim_idle,
            max_deliveries=args.max_deliveries,
            maxlen=args.maxlen or None,
            block=args.block,
            batch_size=args.batch_size,
            max_in_flight=args.max_in_flight,
        )
        bus.subscribe(args.pattern, handle, group=args.group, group_options=options)
        consumer = bus.get_stats().groups[0].consumer
    out.write("ready", pid=os.getpid(), client_id=bus.client_id, consumer=consumer)

    last: dict[str, int] = {}
    while not terminated:
        time.sleep(0.05)  # SIGTERM is seen within 50 ms (the sleep resumes after it)
        if args.group is None or terminated:
            continue
        snapshot = bus.get_stats()
        (stats,) = snapshot.groups
        now = {
            "in_flight": stats.in_flight,
            "dropped": snapshot.events_dropped,
            "read": stats.read,
            "acked": stats.acked,
            "redelivered": stats.redelivered,
            "dead_lettered": stats.dead_lettered,
            "lost": stats.lost,
        }
        if now != last:
            out.write("stats", **now)
            last = now
    stop.set()
    out.write("stopping")
    bus.disconnect(timeout=5.0)
    out.write("exit")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
