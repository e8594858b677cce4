"""Unbatched publish throughput, ``eventbus`` against raw redis-py, and what a publish costs.

:func:`run_publish` times, in alternating rounds against one Redis server, a loop of
``bus.publish("bench.event", data)`` and a loop of ``r.publish(channel,
json.dumps(envelope_like))`` on one default ``redis.Redis``. One subscriber (a separate
process, :class:`~benchmarks._common.DrainSubscriber`) pattern-subscribes to the channel,
so every PUBLISH does real fan-out work in Redis in both loops.

:func:`run_micro` times the Python-side pieces of ``EventBus.publish`` with no Redis at
all (``timeit``-style: best of several repeats), to show where a publish's microseconds go.
"""

from __future__ import annotations

import gc
import json
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks._common import BENCH_DATA, DrainSubscriber, envelope_like, median
from eventbus import EventBus
from eventbus._core.envelope import encode, new_event_id, seal, timestamp
from eventbus._core.keyspace import Keyspace
from eventbus._core.names import validate_event_type
from eventbus._core.stats import Counters
from eventbus._models import PublishResult

__all__ = ["MicroResult", "ThroughputResult", "run_micro", "run_publish"]

EVENT_TYPE = "bench.event"
SOURCE = "bench"


@dataclass(frozen=True, kw_only=True)
class ThroughputResult:
    """Events per second of each round, raw redis-py and ``eventbus`` side by side."""

    messages: int
    rounds: int
    receivers: int
    raw_rates: tuple[float, ...]
    ours_rates: tuple[float, ...]
    raw_bytes: int
    ours_bytes: int

    @property
    def raw_median(self) -> float:
        """Median events/s of the raw loop."""
        return median(self.raw_rates)

    @property
    def ours_median(self) -> float:
        """Median events/s of the ``bus.publish`` loop."""
        return median(self.ours_rates)

    @property
    def raw_best(self) -> float:
        """Best round of the raw loop, events/s."""
        return max(self.raw_rates)

    @property
    def ours_best(self) -> float:
        """Best round of the ``bus.publish`` loop, events/s."""
        return max(self.ours_rates)

    @property
    def paired_ratio(self) -> float:
        """Median over rounds of ours/raw within the round (each pair ran back to back)."""
        return median([o / r for o, r in zip(self.ours_rates, self.raw_rates, strict=True)])

    @property
    def best_ratio(self) -> float:
        """ours best / raw best."""
        return self.ours_best / self.raw_best


def _raw_loop(client: redis.Redis, channel: str, count: int, first: int, publisher: str) -> float:
    """PUBLISH ``count`` JSON envelopes with plain redis-py; return events/s."""
    publish, dumps = client.publish, json.dumps
    start = time.perf_counter()
    for seq in range(first, first + count):
        envelope = envelope_like(seq, EVENT_TYPE, BENCH_DATA, source=SOURCE, publisher=publisher)
        publish(channel, dumps(envelope))
    return count / (time.perf_counter() - start)


def _ours_loop(bus: EventBus, count: int) -> float:
    """``bus.publish`` ``count`` events; return events/s."""
    publish, data = bus.publish, BENCH_DATA
    start = time.perf_counter()
    for _ in range(count):
        publish(EVENT_TYPE, data)
    return count / (time.perf_counter() - start)


def run_publish(url: str, *, messages: int = 20_000, rounds: int = 5) -> ThroughputResult:
    """Time unbatched publishing, raw redis-py and ``eventbus``, in alternating rounds.

    Round ``i`` runs raw then ours when ``i`` is even, ours then raw when odd, so that
    a drift in the machine's load hits both alike. A warm-up of ``messages // 10``
    (at least 10) of each comes first.

    Args:
        url: a ``redis://`` URL of a server that nothing else is using.
        messages: PUBLISHes per loop per round.
        rounds: rounds of each.
    """
    if messages < 1 or rounds < 1:
        raise ValueError("messages and rounds must be >= 1")
    client = redis.Redis.from_url(url)  # redis-py's defaults, as a user would write it
    bus = EventBus.from_url(url, service_name=SOURCE)
    keys = Keyspace(prefix=bus.config.key_prefix)
    channel, pattern = keys.event_channel(EVENT_TYPE), keys.event_pattern("*")
    raw_rates: list[float] = []
    ours_rates: list[float] = []
    seq = 0
    try:
        with DrainSubscriber(url, pattern):
            bus.connect()
            publisher = bus.client_id
            warmup = max(10, messages // 10)
            _raw_loop(client, channel, warmup, seq, publisher)
            seq += warmup
            _ours_loop(bus, warmup)
            probe = envelope_like(seq, EVENT_TYPE, BENCH_DATA, source=SOURCE, publisher=publisher)
            raw_receivers = client.publish(channel, json.dumps(probe))
            ours_probe = bus.publish(EVENT_TYPE, BENCH_DATA)
            if raw_receivers != ours_probe.receivers:
                raise RuntimeError(
                    f"raw PUBLISH reached {raw_receivers} subscriber(s), ours "
                    f"{ours_probe.receivers}: the loops would not do the same work"
                )
            for index in range(rounds):
                gc.collect()
                if index % 2 == 0:
                    raw_rates.append(_raw_loop(client, channel, messages, seq, publisher))
                    ours_rates.append(_ours_loop(bus, messages))
                else:
                    ours_rates.append(_ours_loop(bus, messages))
                    raw_rates.append(_raw_loop(client, channel, messages, seq, publisher))
                seq += messages
            ours_bytes = len(
                seal(
                    encode(
                        event_id=new_event_id(),
                        event_type=EVENT_TYPE,
                        source=SOURCE,
                        moment=timestamp(time.time_ns()),
                        data=BENCH_DATA,
                        publisher=publisher,
                    ),
                    seq,
                )
            )
            raw_bytes = len(json.dumps(probe).encode())
    finally:
        bus.disconnect(timeout=2.0)
        client.close()
    return ThroughputResult(
        messages=messages,
        rounds=rounds,
        receivers=raw_receivers,
        raw_rates=tuple(raw_rates),
        ours_rates=tuple(ours_rates),
        raw_bytes=raw_bytes,
        ours_bytes=ours_bytes,
    )


# -- micro-benchmarks ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MicroResult:
    """One timed piece: best-of-``repeat`` microseconds per call."""

    name: str
    usec: float
    note: str = ""


def time_call(func: Callable[[], Any], *, number: int, repeat: int) -> float:
    """Microseconds per call of ``func``: the best of ``repeat`` runs of ``number`` calls."""
    timer = timeit.Timer(func)
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def run_micro(*, number: int = 10_000, repeat: int = 7) -> list[MicroResult]:
    """Time the pieces of ``EventBus.publish`` (and raw's JSON work) without Redis.

    The rows are the steps of ``EventBus.publish`` -> ``_send`` in order, then whole
    paths: the envelope start to end, ``bus.publish`` on ``memory://`` with no subscriber
    (all of the Python side but the redis-py call), and raw's ``json.dumps`` of an
    envelope-like dict. Timings include ~0.05 µs of call overhead each.
    """
    keys = Keyspace()
    counters = Counters()
    publisher = "bench:host:1234:1"
    now_ns = time.time_ns()
    stamp = timestamp(now_ns)
    body = encode(
        event_id=new_event_id(now_ns),
        event_type=EVENT_TYPE,
        source=SOURCE,
        moment=stamp,
        data=BENCH_DATA,
        publisher=publisher,
    )

    def envelope() -> bytes:
        clock = time.time_ns()
        return seal(
            encode(
                event_id=new_event_id(clock),
                event_type=EVENT_TYPE,
                source=SOURCE,
                moment=timestamp(clock),
                data=BENCH_DATA,
                publisher=publisher,
            ),
            17,
        )

    def encode_only() -> bytes:
        return encode(
            event_id="01JABCDEFGHJKMNPQRSTVWXYZ0",
            event_type=EVENT_TYPE,
            source=SOURCE,
            moment=stamp,
            data=BENCH_DATA,
            publisher=publisher,
        )

    def raw_json() -> str:
        return json.dumps(
            envelope_like(1, EVENT_TYPE, BENCH_DATA, source=SOURCE, publisher=publisher)
        )

    def result() -> PublishResult:
        return PublishResult(event_id="x", receivers=1, event_type=EVENT_TYPE, channel="c")

    pieces: list[tuple[str, Callable[[], Any], str]] = [
        ("validate_event_type", lambda: validate_event_type(EVENT_TYPE), "regex fullmatch"),
        ("Keyspace.event_channel", lambda: keys.event_channel(EVENT_TYPE), "f-string"),
        ("new_event_id", lambda: new_event_id(now_ns), "ULID: lock, pair table"),
        ("timestamp", lambda: timestamp(now_ns), "RFC 3339, prefix cached per second"),
        ("encode (given id and time)", encode_only, "template + json of data"),
        ("seal", lambda: seal(body, 17), "bytes concat"),
        ("Counters.add", lambda: counters.add("events_published"), "lock + dict"),
        ("PublishResult(...)", result, "attrs frozen, kw_only"),
        ("envelope, start to end", envelope, "time_ns + id + time + encode + seal"),
    ]
    results = [
        MicroResult(name=name, usec=time_call(func, number=number, repeat=repeat), note=note)
        for name, func, note in pieces
    ]
    with EventBus.from_url("memory://", service_name=SOURCE) as bus:
        results.append(
            MicroResult(
                name="bus.publish on memory://",
                usec=time_call(
                    lambda: bus.publish(EVENT_TYPE, BENCH_DATA), number=number, repeat=repeat
                ),
                note="no subscriber: the whole Python side but redis-py",
            )
        )
    results.append(
        MicroResult(
            name="raw: json.dumps(envelope-like dict)",
            usec=time_call(raw_json, number=number, repeat=repeat),
            note="the raw loop's Python work but redis-py",
        )
    )
    return results
