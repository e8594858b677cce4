"""Publish-to-handler latency at a fixed rate, ``eventbus`` against raw redis-py.

Both sides run in this one process, so ``time.perf_counter()`` stamps agree: the
publisher puts ``perf_counter()`` into the event's data right before publishing, the
handler takes ``perf_counter()`` when it starts, and the difference is one sample.

* raw: a ``redis.Redis().pubsub()`` pattern subscription read by one thread in a
  ``get_message(timeout=...)`` loop; each message is ``json.loads``-ed and submitted to a
  ``ThreadPoolExecutor`` whose task takes the arrival time.
* ours: ``bus.subscribe("bench.latency", handler)``, the handler takes the arrival time.

The publisher is paced by a deadline loop (it sleeps until the next slot, so the rate
holds whatever a publish costs). Both receivers are set up at once and the measured
time is split into rounds that alternate raw and ours, after a warm-up of each.

:func:`run_delivery_micro` times the Python-side pieces of the delivery path without
Redis (decode, loss tracking), against raw's ``json.loads``.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from benchmarks._common import BENCH_DATA, envelope_like, percentile
from benchmarks.bench_publish import MicroResult, time_call
from eventbus import Event, EventBus
from eventbus._core.envelope import decode, encode, format_time, new_event_id, seal
from eventbus._core.loss import LossTracker
from eventbus._core.stats import Counters, LatencyWindow

__all__ = ["LatencyResult", "LatencyStats", "run_delivery_micro", "run_latency"]

EVENT_TYPE = "bench.latency"
SOURCE = "bench"
RAW_CHANNEL = "rawbench:latency"
RAW_PATTERN = "rawbench:*"


@dataclass(frozen=True, kw_only=True)
class LatencyStats:
    """Latency percentiles of one side, in milliseconds."""

    sent: int
    received: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def from_samples(cls, samples: list[float], sent: int) -> LatencyStats:
        """Summarise ``samples`` (seconds)."""
        if not samples:
            raise RuntimeError(f"no event of {sent} arrived")
        ordered = sorted(samples)
        return cls(
            sent=sent,
            received=len(ordered),
            p50=percentile(ordered, 0.50) * 1e3,
            p90=percentile(ordered, 0.90) * 1e3,
            p99=percentile(ordered, 0.99) * 1e3,
            max=ordered[-1] * 1e3,
            mean=sum(ordered) / len(ordered) * 1e3,
        )


@dataclass(frozen=True, kw_only=True)
class LatencyResult:
    """Both sides' latency at one publish rate."""

    rate: float
    seconds: float
    rounds: int
    raw: LatencyStats
    ours: LatencyStats

    @property
    def added_p50(self) -> float:
        """ours p50 - raw p50, ms."""
        return self.ours.p50 - self.raw.p50

    @property
    def added_p99(self) -> float:
        """ours p99 - raw p99, ms."""
        return self.ours.p99 - self.raw.p99


class _Receiver:
    """Arrival samples of one side; ``append`` is atomic, so no lock."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def record(self, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        if data["m"]:
            self.samples.append(now - data["t"])


class _Side(Protocol):
    """One side of the comparison: how to publish, and where arrivals are recorded."""

    receiver: _Receiver

    def publish(self, measure: bool) -> None: ...


class _RawSide:
    """A redis-py PubSub read by one thread; every message json-decoded and pooled."""

    def __init__(self, url: str, threads: int) -> None:
        self.receiver = _Receiver()
        self.client = redis.Redis.from_url(url)  # redis-py's defaults
        self.publisher = redis.Redis.from_url(url)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="raw-handler")
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.psubscribe(RAW_PATTERN)
        deadline = time.monotonic() + 5.0
        while True:  # wait for the confirmation, so that no event is published too early
            message = self.pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "psubscribe":
                break
            if time.monotonic() > deadline:
                raise RuntimeError("raw PSUBSCRIBE not confirmed within 5 s")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="raw-listener", daemon=True)
        self._thread.start()
        self._seq = itertools.count()

    def _listen(self) -> None:
        get, submit, loads = self.pubsub.get_message, self.pool.submit, json.loads
        record, stop = self._handle, self._stop
        while not stop.is_set():
            message = get(timeout=0.2)
            if message is not None and message["type"] == "pmessage":
                submit(record, loads(message["data"]))

    def _handle(self, doc: dict[str, Any]) -> None:
        self.receiver.record(doc["data"])

    def publish(self, measure: bool) -> None:
        data = {**BENCH_DATA, "m": measure, "t": time.perf_counter()}
        envelope = envelope_like(
            next(self._seq), EVENT_TYPE, data, source=SOURCE, publisher="raw:host:1:1"
        )
        self.publisher.publish(RAW_CHANNEL, json.dumps(envelope))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.pool.shutdown(wait=True)
        self.pubsub.close()
        self.client.close()
        self.publisher.close()


class _OursSide:
    """``bus.subscribe(EVENT_TYPE, handler)`` on a bus of its own."""

    def __init__(self, url: str) -> None:
        self.receiver = _Receiver()
        self.bus = EventBus.from_url(url, service_name=SOURCE)
        self.bus.connect()
        self.bus.subscribe(EVENT_TYPE, self._handle)

    def _handle(self, event: Event) -> None:
        self.receiver.record(event.data)

    def publish(self, measure: bool) -> None:
        self.bus.publish(EVENT_TYPE, {**BENCH_DATA, "m": measure, "t": time.perf_counter()})

    def close(self) -> None:
        self.bus.disconnect(timeout=2.0)


def _paced(publish: Callable[[bool], None], rate: float, seconds: float, measure: bool) -> int:
    """Publish at ``rate`` per second for ``seconds`` with a deadline loop; return the count."""
    count = max(1, round(rate * seconds))
    interval = 1.0 / rate
    start = time.perf_counter()
    for index in range(count):
        delay = start + index * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        publish(measure)
    return count


def _wait_for(receiver: _Receiver, expected: int, timeout: float) -> None:
    """Wait (polling) until ``expected`` samples arrived or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while len(receiver.samples) < expected and time.monotonic() < deadline:
        time.sleep(0.005)


def run_latency(
    url: str,
    *,
    rate: float = 1000.0,
    seconds: float = 5.0,
    warmup: float = 1.0,
    rounds: int = 10,
) -> LatencyResult:
    """Measure publish-to-handler latency of raw redis-py and ``eventbus`` at ``rate``/s.

    Each side publishes for ``warmup`` seconds unmeasured, then ``seconds`` measured,
    split into ``rounds`` rounds that alternate which side goes first.

    Args:
        url: a ``redis://`` URL of a server that nothing else is using.
        rate: events per second.
        seconds: measured seconds per side.
        warmup: unmeasured seconds per side before the first round.
        rounds: how many alternating rounds the measured time is split into.
    """
    if rate <= 0 or seconds <= 0 or rounds < 1:
        raise ValueError("rate and seconds must be > 0, rounds >= 1")
    ours = _OursSide(url)
    try:
        raw = _RawSide(url, threads=ours.bus.config.handler_threads)
        try:
            sides: list[_Side] = [raw, ours]
            for side in sides:
                _paced(side.publish, rate, warmup, measure=False)
            time.sleep(0.2)  # let the warm-up events drain
            sent = {id(side): 0 for side in sides}
            for index in range(rounds):
                gc.collect()
                for side in sides if index % 2 == 0 else sides[::-1]:
                    sent[id(side)] += _paced(side.publish, rate, seconds / rounds, measure=True)
                    _wait_for(side.receiver, sent[id(side)], timeout=2.0)
            raw_stats = LatencyStats.from_samples(raw.receiver.samples, sent[id(raw)])
            ours_stats = LatencyStats.from_samples(ours.receiver.samples, sent[id(ours)])
        finally:
            raw.close()
    finally:
        ours.close()
    return LatencyResult(rate=rate, seconds=seconds, rounds=rounds, raw=raw_stats, ours=ours_stats)


# -- micro-benchmarks of the delivery path ----------------------------------------------


def run_delivery_micro(*, number: int = 10_000, repeat: int = 7) -> list[MicroResult]:
    """Time the Python-side pieces of delivering one event, without Redis.

    ``decode`` is what the listener thread does per message before matching; raw's
    listener does ``json.loads`` only. The loss tracker and counters run per message too.
    """
    channel = "eventbus:ev:" + EVENT_TYPE
    payloads = [
        seal(
            encode(
                event_id=new_event_id(),
                event_type=EVENT_TYPE,
                source=SOURCE,
                moment=dt.datetime.now(dt.UTC),
                data=BENCH_DATA,
                publisher="bench:host:1:1",
            ),
            seq,
        )
        for seq in range(1, 1001)
    ]
    payload = payloads[0]
    event = decode(payload, channel).event
    stamp = format_time(event.time)
    counters = Counters()
    window = LatencyWindow()
    tracker = LossTracker()
    ids = itertools.cycle([decode(p, channel).event.id for p in payloads])
    seqs = itertools.count(1)

    def loss() -> None:
        if not tracker.is_duplicate("k", next(ids) + str(next(seqs))):
            tracker.check("k", channel, "bench:host:1:1", next(seqs))

    def make_event() -> Event:
        return Event(
            id=event.id,
            type=event.type,
            data=event.data,
            source=event.source,
            time=event.time,
            headers={},
        )

    def delivery_latency() -> None:
        window.record(max(0.0, time.time() - event.time.timestamp()))

    pieces: list[tuple[str, Callable[[], Any], str]] = [
        ("decode", lambda: decode(payload, channel), "utf-8 + json.loads + checks + Event"),
        ("raw: json.loads", lambda: json.loads(payload), "all raw's listener decodes"),
        ("Event(...)", make_event, "attrs frozen, headers converter"),
        ("datetime.fromisoformat", lambda: dt.datetime.fromisoformat(stamp), "RFC 3339 time"),
        ("LossTracker dedupe + sequence", loss, "OrderedDict + dict"),
        ("Counters.add", lambda: counters.add("events_received"), "lock + dict"),
        ("delivery-latency sample", delivery_latency, "time() - timestamp(), deque"),
    ]
    return [
        MicroResult(name=name, usec=time_call(func, number=number, repeat=repeat), note=note)
        for name, func, note in pieces
    ]
