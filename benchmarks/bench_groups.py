"""Durable group throughput: ``eventbus`` group consumers against raw redis-py.

:func:`run_groups` fills a group's stream with ``events`` entries, then times how long
``consumers`` consumers of one consumer group take to handle and acknowledge all of
them, in alternating rounds against one Redis server:

* **raw**: ``consumers`` threads, each with its own ``redis.Redis``, loop on
  ``XREADGROUP GROUP g c COUNT batch BLOCK 100 STREAMS s >``; each entry's envelope is
  ``json.loads``-ed and handed to the handler (a counter), and the batch is
  acknowledged with one ``XACK``;
* **ours**: ``consumers`` buses in this process subscribe with ``group=...`` (a handler
  that counts); each reads with the same batch size, runs the handler on its pool and
  acknowledges the entries whose handler succeeded in one ``XACK`` before its next
  read.

The stream is filled before the clock starts (raw: ``XADD`` of the same envelopes
that ``bus.publish`` writes; ours: ``bus.publish`` routes them while no consumer
reads), so both sides time the same thing: reading, decoding, handling and
acknowledging ``events`` entries. Everything runs in one process on both sides, so
the consumers share one GIL alike.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from benchmarks._common import BENCH_DATA, median
from eventbus import Event, EventBus, GroupOptions, PerformanceConfig

__all__ = ["GroupResult", "run_groups"]

_BATCH = 10


@dataclass(frozen=True)
class GroupResult:
    """Events handled per second by ``consumers`` consumers, per round, raw and ours."""

    consumers: int
    events: int
    raw: Sequence[float]
    ours: Sequence[float]

    @property
    def raw_median(self) -> float:
        """Median events/s of the raw rounds."""
        return median(self.raw)

    @property
    def ours_median(self) -> float:
        """Median events/s of our rounds."""
        return median(self.ours)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios ours/raw."""
        return median([o / r for o, r in zip(self.ours, self.raw, strict=True)])


def _raw_round(url: str, events: int, consumers: int) -> float:
    client = redis.Redis.from_url(url)
    stream, group = f"bench:raw:{uuid.uuid4().hex[:8]}", "g"
    client.xgroup_create(stream, group, id="$", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for n in range(events):
        doc = {"specversion": "1.0", "id": str(n), "type": "bench.group", "data": BENCH_DATA}
        pipe.xadd(stream, {"e": json.dumps(doc)})
        if n % 500 == 499:
            pipe.execute()
    pipe.execute()
    handled = [0]
    lock = threading.Lock()
    done = threading.Event()

    def handler(data: object) -> None:
        with lock:
            handled[0] += 1
            if handled[0] >= events:
                done.set()

    def consume(name: str) -> None:
        conn = redis.Redis.from_url(url)
        try:
            while not done.is_set():
                reply = conn.xreadgroup(group, name, {stream: ">"}, count=_BATCH, block=100)
                for _, entries in reply or []:
                    for _, fields in entries:
                        handler(json.loads(fields[b"e"])["data"])
                    if entries:  # one XACK per read, as ours acknowledges in batches
                        conn.xack(stream, group, *[entry_id for entry_id, _ in entries])
        finally:
            conn.close()

    threads = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(consumers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    done.wait(120)
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join()
    client.delete(stream)
    client.close()
    return events / elapsed


def _ours_round(url: str, events: int, consumers: int) -> float:
    prefix = f"benchg{uuid.uuid4().hex[:8]}:"
    target = f"{url}{'&' if '?' in url else '?'}key_prefix={prefix}"
    options = GroupOptions(batch_size=_BATCH, block=0.1)
    perf = PerformanceConfig(batch_size=500, batch_interval=0.01)
    handled = [0]
    lock = threading.Lock()
    done = threading.Event()

    def handler(event: Event) -> None:
        with lock:
            handled[0] += 1
            if handled[0] >= events:
                done.set()

    with EventBus.from_url(target, service_name="bench-pub", performance=perf) as publisher:
        # Register the group, stop reading, and fill its stream through the publisher.
        sub = publisher.subscribe("bench.group", handler, group="bench", group_options=options)
        publisher.unsubscribe(sub.id)
        for _ in range(events):
            publisher.publish("bench.group", BENCH_DATA)
        publisher.flush(60)
        handled[0] = 0
        buses = [EventBus.from_url(target, service_name=f"bench-c{i}") for i in range(consumers)]
        try:
            for bus in buses:
                bus.connect()
            started = time.perf_counter()
            for bus in buses:
                bus.subscribe("bench.group", handler, group="bench", group_options=options)
            done.wait(120)
            elapsed = time.perf_counter() - started
        finally:
            for bus in buses:
                bus.disconnect(timeout=5)
    return events / elapsed


def run_groups(
    url: str, *, events: int = 5_000, consumers: int = 1, rounds: int = 3
) -> GroupResult:
    """Alternate raw and ours ``rounds`` times (order flipped per round)."""
    raw: list[float] = []
    ours: list[float] = []
    for n in range(rounds):
        if n % 2 == 0:
            raw.append(_raw_round(url, events, consumers))
            ours.append(_ours_round(url, events, consumers))
        else:
            ours.append(_ours_round(url, events, consumers))
            raw.append(_raw_round(url, events, consumers))
    return GroupResult(consumers=consumers, events=events, raw=raw, ours=ours)
