"""Batched publish throughput: ``eventbus``'s flusher against a raw redis-py pipeline.

:func:`run_batch` times, in alternating rounds against one Redis server:

* **raw**: per message, the envelope-like dict of the unbatched raw baseline
  (:func:`~benchmarks._common.envelope_like`), ``json.dumps``-ed and queued with
  ``pipe.publish(channel, payload)`` on ``r.pipeline(transaction=False)``;
  ``pipe.execute()`` every ``batch_size`` messages (and once more for a remainder).
  Timed from the first message to the last ``execute()`` returning.
* **ours**: ``bus.publish("bench.event", data)`` ``messages`` times on a bus with
  ``PerformanceConfig(batch_size=..., batch_interval=..., max_buffer=...)``, timed from
  the first publish to ``bus.flush()`` returning (every event written to Redis and
  answered).

One subscriber (a separate process, :class:`~benchmarks._common.DrainSubscriber`)
pattern-subscribes to the channel, so every PUBLISH does real fan-out work in Redis in
both loops, as in the unbatched benchmark.

Besides events/s, each loop records CPU time per event: the publishing thread's
(``time.thread_time``), the flusher thread's (its CPU clock, read from this thread with
``time.pthread_getcpuclockid``) and the flusher's share inside
``RedisTransport.publish_many``, and the whole process's. Ours' round trips are not in
``bus.get_stats()``: they are counted by wrapping ``publish_many`` on the bus's
transport for the run (one call, two ``thread_time`` reads and an append per round
trip, about 1 µs per batch, so ~0.01 µs per event at a batch size of 100).
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks._common import BENCH_DATA, DrainSubscriber, envelope_like, median
from eventbus import EventBus, PerformanceConfig
from eventbus._core.keyspace import Keyspace

__all__ = ["BatchResult", "LoopSample", "run_batch"]

EVENT_TYPE = "bench.event"
SOURCE = "bench"
BATCH_SIZE = 100
#: Long enough that a batch fills before it is due (100 events take ~2-5 ms to
#: publish here), short enough that a last partial batch is not held up for long.
BATCH_INTERVAL = 0.01
FLUSHER_THREAD = "eventbus-flusher"


@dataclass(frozen=True, kw_only=True)
class LoopSample:
    """One timed loop of one side: its rate, round trips and CPU time per event (µs)."""

    rate: float
    round_trips: int
    smallest_batch: int
    largest_batch: int
    caller_cpu: float
    process_cpu: float
    flusher_cpu: float | None = None
    send_cpu: float | None = None
    loop_share: float = 1.0


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """Raw pipeline and ``eventbus`` batched publishing, side by side per round."""

    messages: int
    rounds: int
    batch_size: int
    batch_interval: float
    max_buffer: int
    receivers: int
    raw: tuple[LoopSample, ...]
    ours: tuple[LoopSample, ...]

    @property
    def raw_rates(self) -> tuple[float, ...]:
        """Events/s of each raw round."""
        return tuple(s.rate for s in self.raw)

    @property
    def ours_rates(self) -> tuple[float, ...]:
        """Events/s of each ``eventbus`` round."""
        return tuple(s.rate for s in self.ours)

    @property
    def raw_median(self) -> float:
        """Median events/s of the raw pipeline loop."""
        return median(self.raw_rates)

    @property
    def ours_median(self) -> float:
        """Median events/s of the batched ``bus.publish`` loop."""
        return median(self.ours_rates)

    @property
    def raw_best(self) -> float:
        """Best raw round, events/s."""
        return max(self.raw_rates)

    @property
    def ours_best(self) -> float:
        """Best ``eventbus`` round, events/s."""
        return max(self.ours_rates)

    @property
    def paired_ratio(self) -> float:
        """Median over rounds of ours/raw within the round (each pair ran back to back)."""
        return median([o / r for o, r in zip(self.ours_rates, self.raw_rates, strict=True)])

    @property
    def best_ratio(self) -> float:
        """ours best / raw best."""
        return self.ours_best / self.raw_best

    @staticmethod
    def median_of(samples: Sequence[LoopSample], name: str) -> float | None:
        """The median over rounds of one :class:`LoopSample` field (None if not measured)."""
        values = [getattr(s, name) for s in samples]
        if any(v is None for v in values):
            return None
        return median(values)


class _SendProbe:
    """Counts the round trips of a bus's flusher and the CPU time it spends in them.

    Wraps ``publish_many`` on the bus's transport (an instance attribute, removed by
    :meth:`remove`) and reads the flusher thread's CPU clock.
    """

    def __init__(self, bus: EventBus) -> None:
        self._transport: Any = getattr(bus, "_transport", None)
        self._original: Callable[..., list[int]] | None = None
        self.sizes: list[int] = []
        self.counts: list[int] = []
        self.send_cpu = 0.0
        if self._transport is not None and hasattr(self._transport, "publish_many"):
            self._original = self._transport.publish_many
            self._transport.publish_many = self._publish_many
        self._clock: int | None = None
        flusher = getattr(getattr(bus, "_batcher", None), "_thread", None)
        if not isinstance(flusher, threading.Thread):  # by name, if the internals moved
            flusher = next((t for t in threading.enumerate() if t.name == FLUSHER_THREAD), None)
        getclock = getattr(time, "pthread_getcpuclockid", None)
        if flusher is not None and flusher.ident is not None and getclock is not None:
            self._clock = getclock(flusher.ident)

    @property
    def counting(self) -> bool:
        """True if round trips are being counted."""
        return self._original is not None

    def _publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        assert self._original is not None
        start = time.thread_time()
        try:
            counts = self._original(messages, timeout)
        finally:
            self.send_cpu += time.thread_time() - start
        self.sizes.append(len(messages))
        self.counts.append(min(counts, default=0))
        return counts

    def reset(self) -> None:
        """Forget what was counted so far."""
        self.sizes.clear()
        self.counts.clear()
        self.send_cpu = 0.0

    def flusher_cpu(self) -> float | None:
        """The flusher thread's CPU time so far, seconds (None if it cannot be read)."""
        return None if self._clock is None else time.clock_gettime(self._clock)

    def remove(self) -> None:
        """Put the transport's own ``publish_many`` back."""
        if self._original is not None:
            del self._transport.publish_many
            self._original = None


def _raw_loop(
    client: redis.Redis, channel: str, count: int, first: int, publisher: str, batch: int
) -> LoopSample:
    """Pipeline ``count`` JSON envelopes, ``execute()`` every ``batch``; one sample."""
    pipe = client.pipeline(transaction=False)
    publish, execute, dumps = pipe.publish, pipe.execute, json.dumps
    round_trips = pending = 0
    cpu, process = time.thread_time(), time.process_time()
    start = time.perf_counter()
    for seq in range(first, first + count):
        envelope = envelope_like(seq, EVENT_TYPE, BENCH_DATA, source=SOURCE, publisher=publisher)
        publish(channel, dumps(envelope))
        pending += 1
        if pending == batch:
            execute()
            round_trips += 1
            pending = 0
    if pending:
        execute()
        round_trips += 1
    elapsed = time.perf_counter() - start
    cpu, process = time.thread_time() - cpu, time.process_time() - process
    pipe.reset()
    return LoopSample(
        rate=count / elapsed,
        round_trips=round_trips,
        smallest_batch=count - (round_trips - 1) * batch,
        largest_batch=min(batch, count),
        caller_cpu=cpu / count * 1e6,
        process_cpu=process / count * 1e6,
    )


def _ours_loop(bus: EventBus, count: int, probe: _SendProbe, flush_timeout: float) -> LoopSample:
    """``bus.publish`` ``count`` events and ``bus.flush()``; one sample."""
    publish, data = bus.publish, BENCH_DATA
    probe.reset()
    published = bus.get_stats().events_published
    flusher = probe.flusher_cpu()
    cpu, process = time.thread_time(), time.process_time()
    start = time.perf_counter()
    for _ in range(count):
        publish(EVENT_TYPE, data)
    looped = time.perf_counter()
    flushed = bus.flush(flush_timeout)
    end = time.perf_counter()
    cpu, process = time.thread_time() - cpu, time.process_time() - process
    flusher_end = probe.flusher_cpu()
    if not flushed:
        raise RuntimeError(f"bus.flush() did not finish within {flush_timeout} s")
    sent = bus.get_stats().events_published - published
    if sent != count:
        raise RuntimeError(f"{count} events published, but the bus counted {sent} sent")
    elapsed = end - start
    sizes = probe.sizes if probe.counting else [0]
    return LoopSample(
        rate=count / elapsed,
        round_trips=len(probe.sizes) if probe.counting else 0,
        smallest_batch=min(sizes),
        largest_batch=max(sizes),
        caller_cpu=cpu / count * 1e6,
        process_cpu=process / count * 1e6,
        flusher_cpu=(
            None
            if flusher is None or flusher_end is None
            else (flusher_end - flusher) / count * 1e6
        ),
        send_cpu=probe.send_cpu / count * 1e6 if probe.counting else None,
        loop_share=(looped - start) / elapsed,
    )


def run_batch(
    url: str,
    *,
    messages: int = 50_000,
    rounds: int = 5,
    batch_size: int = BATCH_SIZE,
    batch_interval: float = BATCH_INTERVAL,
) -> BatchResult:
    """Time batched publishing, a raw redis-py pipeline and ``eventbus``, in alternating rounds.

    Round ``i`` runs raw then ours when ``i`` is even, ours then raw when odd. A warm-up
    of ``messages // 10`` (at least ``batch_size``) of each comes first. The bus's
    ``max_buffer`` is ``messages`` (at least the default), so that a publish loop that
    outruns the flusher queues instead of raising ``PublishBufferFullError``.

    Args:
        url: a ``redis://`` URL of a server that nothing else is using.
        messages: events per loop per round.
        rounds: rounds of each.
        batch_size: messages per round trip, both sides.
        batch_interval: ``PerformanceConfig.batch_interval`` of the bus, seconds.
    """
    if messages < 1 or rounds < 1 or batch_size < 2:
        raise ValueError("messages and rounds must be >= 1, batch_size >= 2")
    max_buffer = max(messages, PerformanceConfig().max_buffer)
    performance = PerformanceConfig(
        batch_size=batch_size, batch_interval=batch_interval, max_buffer=max_buffer
    )
    client = redis.Redis.from_url(url)  # redis-py's defaults, as a user would write it
    bus = EventBus.from_url(url, service_name=SOURCE, performance=performance)
    keys = Keyspace(prefix=bus.config.key_prefix)
    channel, pattern = keys.event_channel(EVENT_TYPE), keys.event_pattern("*")
    flush_timeout = 60.0 + messages / 100
    raw: list[LoopSample] = []
    ours: list[LoopSample] = []
    seq = 0
    probe: _SendProbe | None = None
    try:
        with DrainSubscriber(url, pattern):
            bus.connect()
            probe = _SendProbe(bus)
            publisher = bus.client_id
            warmup = max(batch_size, messages // 10)
            _raw_loop(client, channel, warmup, seq, publisher, batch_size)
            seq += warmup
            _ours_loop(bus, warmup, probe, flush_timeout)
            envelope = envelope_like(
                seq, EVENT_TYPE, BENCH_DATA, source=SOURCE, publisher=publisher
            )
            raw_receivers = client.publish(channel, json.dumps(envelope))
            if probe.counting and set(probe.counts) != {raw_receivers}:
                raise RuntimeError(
                    f"raw PUBLISH reached {raw_receivers} subscriber(s), ours "
                    f"{sorted(set(probe.counts))}: the loops would not do the same work"
                )
            for index in range(rounds):
                gc.collect()
                if index % 2 == 0:
                    raw.append(_raw_loop(client, channel, messages, seq, publisher, batch_size))
                    ours.append(_ours_loop(bus, messages, probe, flush_timeout))
                else:
                    ours.append(_ours_loop(bus, messages, probe, flush_timeout))
                    raw.append(_raw_loop(client, channel, messages, seq, publisher, batch_size))
                seq += messages
    finally:
        if probe is not None:
            probe.remove()
        bus.disconnect(timeout=2.0)
        client.close()
    return BatchResult(
        messages=messages,
        rounds=rounds,
        batch_size=batch_size,
        batch_interval=batch_interval,
        max_buffer=max_buffer,
        receivers=raw_receivers,
        raw=tuple(raw),
        ours=tuple(ours),
    )
