"""Run every benchmark against one fresh ``redis-server``, print the results, write the docs page.

Usage::

    python -m benchmarks.run            # the full run (about 2.5 minutes), writes docs/benchmarks.md
    python -m benchmarks.run --quick    # small counts (about 45 s), same page and tables
    python -m benchmarks.run --output /tmp/bench.md
    python -m benchmarks.run --no-write

The server is started on a free loopback port (never 6379) for this run only, and
stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import (
    ROOT,
    MachineInfo,
    load_average,
    machine_info,
    markdown_table,
    median,
    redis_server,
    text_table,
)
from benchmarks.bench_batch import BatchResult, LoopSample, run_batch
from benchmarks.bench_gateway import (
    GatewaySettings,
    render_markdown_section,
    run_gateway,
)
from benchmarks.bench_gateway import render_text as render_gateway_text
from benchmarks.bench_groups import GroupResult, run_groups
from benchmarks.bench_latency import LatencyResult, run_delivery_micro, run_latency
from benchmarks.bench_publish import MicroResult, ThroughputResult, run_micro, run_publish
from eventbus import PerformanceConfig

__all__ = ["Report", "Settings", "main", "render_markdown", "render_text", "run_all"]

DOCS_PAGE = ROOT / "docs" / "benchmarks.md"

#: The targets of the issue that asked for these benchmarks.
TARGET_THROUGHPUT = 0.90  # ours >= 90 % of raw
TARGET_BATCH_THROUGHPUT = 1.00  # batched: ours >= the raw pipeline
TARGET_ADDED_P50_MS = 0.2
TARGET_ADDED_P99_MS = 1.0


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How much work each benchmark does."""

    messages: int = 20_000
    publish_rounds: int = 5
    batch_messages: int = 50_000
    batch_rounds: int = 5
    batch_size: int = 100
    batch_interval: float = 0.01
    rate: float = 1000.0
    seconds: float = 5.0
    warmup: float = 1.0
    latency_rounds: int = 10
    micro_number: int = 10_000
    micro_repeat: int = 7
    group_events: int = 5_000
    group_rounds: int = 3
    quick: bool = False

    @classmethod
    def for_quick(cls) -> Settings:
        """Small counts: the whole run in about 20 seconds."""
        return cls(
            messages=2_000,
            publish_rounds=3,
            batch_messages=5_000,
            batch_rounds=3,
            seconds=1.5,
            warmup=0.3,
            latency_rounds=4,
            micro_number=2_000,
            micro_repeat=7,
            group_events=1_000,
            group_rounds=2,
            quick=True,
        )


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything one run measured."""

    settings: Settings
    machine: MachineInfo
    publish: ThroughputResult
    batch: BatchResult
    latency: LatencyResult
    micro: list[MicroResult]
    delivery_micro: list[MicroResult]
    groups: list[GroupResult]
    elapsed: float
    load_after: str

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(target, wanted, measured, met) for each target of the issue."""
        ratio = self.publish.paired_ratio
        return [
            (
                "publish throughput, ours vs raw",
                f"at least {TARGET_THROUGHPUT:.0%}",
                f"{ratio:.1%}",
                ratio >= TARGET_THROUGHPUT,
            ),
            (
                "batched publish throughput, ours vs raw pipeline",
                f"at least {TARGET_BATCH_THROUGHPUT:.0%}",
                f"{self.batch.paired_ratio:.1%}",
                self.batch.paired_ratio >= TARGET_BATCH_THROUGHPUT,
            ),
            (
                "added latency at p50",
                f"below {TARGET_ADDED_P50_MS} ms",
                f"{self.latency.added_p50:+.3f} ms",
                self.latency.added_p50 < TARGET_ADDED_P50_MS,
            ),
            (
                "added latency at p99",
                f"below {TARGET_ADDED_P99_MS} ms",
                f"{self.latency.added_p99:+.3f} ms",
                self.latency.added_p99 < TARGET_ADDED_P99_MS,
            ),
        ]


def run_all(url: str, settings: Settings) -> Report:
    """Run every benchmark against the Redis server at ``url``."""
    started = time.perf_counter()
    machine = machine_info(url)
    _say(f"publish throughput: {settings.publish_rounds} x {settings.messages} messages each")
    publish = run_publish(url, messages=settings.messages, rounds=settings.publish_rounds)
    _say(
        f"batched publish throughput: {settings.batch_rounds} x {settings.batch_messages} "
        f"messages each, batches of {settings.batch_size}"
    )
    batch = run_batch(
        url,
        messages=settings.batch_messages,
        rounds=settings.batch_rounds,
        batch_size=settings.batch_size,
        batch_interval=settings.batch_interval,
    )
    _say(f"latency: {settings.rate:.0f}/s for {settings.seconds} s each")
    latency = run_latency(
        url,
        rate=settings.rate,
        seconds=settings.seconds,
        warmup=settings.warmup,
        rounds=settings.latency_rounds,
    )
    _say("micro-benchmarks")
    micro = run_micro(number=settings.micro_number, repeat=settings.micro_repeat)
    delivery = run_delivery_micro(number=settings.micro_number, repeat=settings.micro_repeat)
    groups = []
    for consumers in (1, 3):
        _say(f"durable group: {consumers} consumer(s), {settings.group_events} events")
        groups.append(
            run_groups(
                url,
                events=settings.group_events,
                consumers=consumers,
                rounds=settings.group_rounds,
            )
        )
    return Report(
        settings=settings,
        machine=machine,
        publish=publish,
        batch=batch,
        latency=latency,
        micro=micro,
        delivery_micro=delivery,
        groups=groups,
        elapsed=time.perf_counter() - started,
        load_after=load_average(),
    )


def _say(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


# -- tables ----------------------------------------------------------------------------

_THROUGHPUT_HEADERS = ("", "raw redis-py", "eventbus", "eventbus / raw")
_BATCH_HEADERS = ("", "raw pipeline", "eventbus batched", "eventbus / raw")
_LATENCY_HEADERS = ("ms", "raw redis-py", "eventbus", "added")
_MICRO_HEADERS = ("step", "µs per call", "what it is")
_TARGET_HEADERS = ("target", "wanted", "measured", "result")
_GROUP_HEADERS = (
    "consumers",
    "raw events/s (median)",
    "eventbus events/s (median)",
    "eventbus / raw",
)


def _group_rows(results: Sequence[GroupResult]) -> list[tuple[str, str, str, str]]:
    return [
        (
            str(r.consumers),
            f"{r.raw_median:,.0f}",
            f"{r.ours_median:,.0f}",
            f"{r.ratio:.1%}",
        )
        for r in results
    ]


def _throughput_rows(result: ThroughputResult) -> list[tuple[str, str, str, str]]:
    rows = [
        (
            "median events/s",
            f"{result.raw_median:,.0f}",
            f"{result.ours_median:,.0f}",
            f"{result.ours_median / result.raw_median:.1%}",
        ),
        (
            "best events/s",
            f"{result.raw_best:,.0f}",
            f"{result.ours_best:,.0f}",
            f"{result.best_ratio:.1%}",
        ),
        ("median of per-round ratios", "", "", f"{result.paired_ratio:.1%}"),
        (
            "µs per publish (median)",
            f"{1e6 / result.raw_median:.1f}",
            f"{1e6 / result.ours_median:.1f}",
            f"{1e6 / result.ours_median - 1e6 / result.raw_median:+.1f} µs",
        ),
        ("bytes per message", str(result.raw_bytes), str(result.ours_bytes), ""),
    ]
    rows += [
        (f"round {i + 1} events/s", f"{raw:,.0f}", f"{ours:,.0f}", f"{ours / raw:.1%}")
        for i, (raw, ours) in enumerate(zip(result.raw_rates, result.ours_rates, strict=True))
    ]
    return rows


def _usec(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f}"


def _batch_sizes(samples: Sequence[LoopSample]) -> str:
    low = min(s.smallest_batch for s in samples)
    high = max(s.largest_batch for s in samples)
    return str(low) if low == high else f"{low} to {high}"


def _batch_rows(result: BatchResult) -> list[tuple[str, str, str, str]]:
    raw, ours = result.raw, result.ours
    cpu = BatchResult.median_of
    raw_cpu, ours_cpu = cpu(raw, "process_cpu"), cpu(ours, "process_cpu")
    trips = median([s.round_trips for s in ours])
    rows = [
        (
            "median events/s",
            f"{result.raw_median:,.0f}",
            f"{result.ours_median:,.0f}",
            f"{result.ours_median / result.raw_median:.1%}",
        ),
        (
            "best events/s",
            f"{result.raw_best:,.0f}",
            f"{result.ours_best:,.0f}",
            f"{result.best_ratio:.1%}",
        ),
        ("median of per-round ratios", "", "", f"{result.paired_ratio:.1%}"),
        (
            "µs per event (median)",
            f"{1e6 / result.raw_median:.1f}",
            f"{1e6 / result.ours_median:.1f}",
            f"{1e6 / result.ours_median - 1e6 / result.raw_median:+.1f} µs",
        ),
        (
            "round trips per round (median)",
            f"{median([s.round_trips for s in raw]):,.0f}",
            f"{trips:,.0f}" if trips else "not counted",
            "",
        ),
        ("events per round trip", _batch_sizes(raw), _batch_sizes(ours), ""),
        (
            "CPU µs per event, publishing thread",
            _usec(cpu(raw, "caller_cpu")),
            _usec(cpu(ours, "caller_cpu")),
            "",
        ),
        ("CPU µs per event, flusher thread", "", _usec(cpu(ours, "flusher_cpu")), ""),
        ("... of which in publish_many", "", _usec(cpu(ours, "send_cpu")), ""),
        (
            "CPU µs per event, whole process",
            _usec(raw_cpu),
            _usec(ours_cpu),
            "" if raw_cpu is None or ours_cpu is None else f"{ours_cpu - raw_cpu:+.1f} µs",
        ),
        (
            "publish loop done at (share of the time)",
            "",
            f"{median([s.loop_share for s in ours]):.0%}",
            "",
        ),
    ]
    rows += [
        (
            f"round {i + 1} events/s",
            f"{r.rate:,.0f}",
            f"{o.rate:,.0f}",
            f"{o.rate / r.rate:.1%}",
        )
        for i, (r, o) in enumerate(zip(raw, ours, strict=True))
    ]
    return rows


def _latency_rows(result: LatencyResult) -> list[tuple[str, str, str, str]]:
    raw, ours = result.raw, result.ours
    rows = [
        (
            name,
            f"{getattr(raw, name):.3f}",
            f"{getattr(ours, name):.3f}",
            f"{getattr(ours, name) - getattr(raw, name):+.3f}",
        )
        for name in ("p50", "p90", "p99", "max", "mean")
    ]
    rows.append(
        ("received / sent", f"{raw.received} / {raw.sent}", f"{ours.received} / {ours.sent}", "")
    )
    return rows


def _micro_rows(results: Sequence[MicroResult]) -> list[tuple[str, str, str]]:
    return [(f"`{r.name}`", f"{r.usec:.2f}", r.note) for r in results]


def _target_rows(report: Report) -> list[tuple[str, str, str, str]]:
    return [
        (name, wanted, measured, "pass" if met else "MISS")
        for name, wanted, measured, met in report.targets()
    ]


def render_text(report: Report) -> str:
    """The results as plain-text tables, for the terminal."""
    pub, lat, bat = report.publish, report.latency, report.batch
    micro = [(r.name, f"{r.usec:.2f}", r.note) for r in report.micro]
    delivery = [(r.name, f"{r.usec:.2f}", r.note) for r in report.delivery_micro]
    parts = [
        f"Publish throughput ({pub.rounds} rounds x {pub.messages} messages, "
        f"{pub.receivers} subscriber)",
        text_table(_THROUGHPUT_HEADERS, _throughput_rows(pub)),
        "",
        f"Batched publish throughput ({bat.rounds} rounds x {bat.messages} messages, batches "
        f"of {bat.batch_size}, batch_interval {bat.batch_interval:g} s, {bat.receivers} "
        "subscriber)",
        text_table(_BATCH_HEADERS, _batch_rows(bat)),
        "",
        f"Publish -> handler latency ({lat.rate:.0f} events/s, {lat.seconds:g} s measured each)",
        text_table(_LATENCY_HEADERS, _latency_rows(lat)),
        "",
        "Publish path pieces (no Redis)",
        text_table(_MICRO_HEADERS, micro),
        "",
        "Delivery path pieces (no Redis)",
        text_table(_MICRO_HEADERS, delivery),
        "",
        "Durable group throughput",
        text_table(_GROUP_HEADERS, _group_rows(report.groups)),
        "",
        "Targets",
        text_table(_TARGET_HEADERS, _target_rows(report)),
        "",
        f"({report.elapsed:.0f} s{', quick run' if report.settings.quick else ''})",
    ]
    return "\n".join(parts)


def _buffer_note(result: BatchResult) -> str:
    default = PerformanceConfig().max_buffer
    if result.max_buffer <= default:
        return f"`max_buffer` is the default ({default:,}), more than one loop publishes."
    return (
        "`max_buffer` is raised to the loop's size because the publish loop outruns the "
        f'flusher (see "publish loop done at" below): with the default of {default:,}, a '
        f"tight loop of {result.messages:,} publishes raises `PublishBufferFullError`."
    )


def render_markdown(report: Report) -> str:
    """The ``docs/benchmarks.md`` page (MyST Markdown)."""
    s, pub, lat, bat = report.settings, report.publish, report.latency, report.batch
    machine_rows = [
        *report.machine.rows(),
        ("load average at the end", report.load_after),
        ("duration of the run", f"{report.elapsed:.0f} s"),
    ]
    kind = (
        "a **quick** run (`--quick`: small counts, noisier numbers)"
        if s.quick
        else "a full run (`python -m benchmarks.run`)"
    )
    return f"""# Benchmarks

These numbers compare `eventbus` with raw redis-py doing the same work, **in the same
run, against the same freshly started `redis-server`** (on a free loopback port, stopped
at the end). This machine's speed moves 3-5x with its load, so an absolute number from
one run says little, and numbers from different runs should not be compared: only the
comparisons within one run mean anything. Nothing here is asserted by the test suite.

This page was written by {kind}. Regenerate it with:

```console
$ python -m benchmarks.run          # about 2.5 minutes
$ python -m benchmarks.run --quick  # about 45 s
```

## Machine

{markdown_table(("", "value"), machine_rows)}

## Targets

{markdown_table(_TARGET_HEADERS, _target_rows(report))}

## Publish throughput

Unbatched, one PUBLISH per event, {pub.rounds} rounds of {pub.messages:,} messages each,
raw and ours alternating (raw first in odd rounds, ours first in even ones), after a
warm-up of each:

- **raw**: a loop of `r.publish(channel, json.dumps(envelope))` on one default
  `redis.Redis`, where `envelope` is a dict with the keys of our envelope, the same
  `data`, a counter as id and `time.time()` as time, built per message;
- **eventbus**: a loop of `bus.publish("bench.event", data)` (ULID, RFC 3339 time,
  sequence number, publish deadline).

Both publish to the same channel, to which {pub.receivers} subscriber is connected (a
separate process that pattern-subscribes and discards what it reads), so every PUBLISH
does real fan-out work in Redis in both loops. The target compares the median of the
per-round ratios.

{markdown_table(_THROUGHPUT_HEADERS, _throughput_rows(pub), right=(1, 2, 3))}

## Batched publish throughput

Batched, {bat.batch_size} PUBLISHes per round trip on both sides, {bat.rounds} rounds of
{bat.messages:,} messages each, raw and ours alternating as above, after a warm-up of
each:

- **raw**: per message, the same envelope-like dict as the unbatched raw loop,
  `json.dumps`-ed and queued with `pipe.publish(channel, payload)` on one
  `r.pipeline(transaction=False)`, with `pipe.execute()` every {bat.batch_size}
  messages; timed from the first message until the last `execute()` returned;
- **eventbus**: a loop of `bus.publish("bench.event", data)` on a bus with
  `PerformanceConfig(batch_size={bat.batch_size}, batch_interval={bat.batch_interval:g},
  max_buffer={bat.max_buffer:_})`, timed from the first publish until `bus.flush()`
  returned (every event written to Redis and answered). `publish` encodes the event
  and queues it; the flusher thread sends up to {bat.batch_size} per round trip
  (`RedisTransport.publish_many`: one packed write, then the replies).

The interval of {bat.batch_interval * 1000:g} ms does not hold batches back: a batch of
{bat.batch_size} fills in a few milliseconds, and once the flusher is behind it takes full
batches at once. The same subscriber as above is connected, and the target compares the
median of the per-round ratios.
{_buffer_note(bat)}

The CPU rows are medians over the rounds, per event: the publishing thread's
`time.thread_time()`, the flusher thread's CPU clock (read with
`time.pthread_getcpuclockid`), the part of it spent in `publish_many`, and the whole
process's `time.process_time()`. `bus.get_stats()` does not count round trips: ours are
counted by wrapping `publish_many` on the bus's transport for the run (about 1 µs per
round trip). "Publish loop done at" is when the last `bus.publish` returned, as a share
of the time until `bus.flush()` returned.

{markdown_table(_BATCH_HEADERS, _batch_rows(bat), right=(1, 2, 3))}

## Publish to handler latency

{lat.rate:,.0f} events/s for {lat.seconds:g} s per side ({lat.rounds} alternating rounds,
after {s.warmup:g} s of warm-up each), publisher and subscriber in one process so that
`time.perf_counter()` stamps agree. The publisher stamps `perf_counter()` into the
event's `data` just before publishing and is paced by a deadline loop; the handler takes
`perf_counter()` when it starts.

- **raw**: a redis-py `PubSub` (pattern subscription) read by one thread with
  `get_message(timeout=0.2)`; each message is `json.loads`-ed and submitted to a
  `ThreadPoolExecutor` whose task takes the arrival time;
- **eventbus**: `bus.subscribe("bench.latency", handler)`; the handler takes the
  arrival time.

{markdown_table(_LATENCY_HEADERS, _latency_rows(lat), right=(1, 2, 3))}

## Where a publish spends its time

The Python side of `bus.publish`, piece by piece, without Redis (best of
{s.micro_repeat} runs of {s.micro_number:,} calls each; each time includes about
0.05 µs of call overhead). The rest of a publish is the round trip through redis-py:
raw goes through `Redis.publish` (connection pool checkout and release, retry wrapper,
RESP3 reply), ours writes the command on a connection of its own pool and reads the
reply (`send_command` and `read_response`, RESP2).

{markdown_table(_MICRO_HEADERS, _micro_rows(report.micro), right=(1,))}

## Where a delivery spends its time

What the listener thread does per message before it hands the event to a handler
thread, without Redis. Raw's listener only runs `json.loads`.

{markdown_table(_MICRO_HEADERS, _micro_rows(report.delivery_micro), right=(1,))}

## Durable group throughput

How fast one consumer group drains a stream of {s.group_events:,} events, with 1 and
with 3 consumers ({s.group_rounds} alternating rounds each; median events/s). The
stream is filled before the clock starts; the clock stops when every event was
handled. Everything runs in one process on both sides (the consumers share a GIL).

- **raw**: threads, each with its own `redis.Redis`, loop on `XREADGROUP ... COUNT 10
  BLOCK 100`, `json.loads` each entry, call the handler (a counter), and acknowledge
  each read's entries with one `XACK`;
- **eventbus**: buses subscribed with `group=`; each consumer reads 10 entries at a
  time, runs the handler on its pool (one thread hop per event), and acknowledges the
  handled entries in one `XACK` before its next read.

{markdown_table(_GROUP_HEADERS, _group_rows(report.groups), right=(1, 2, 3))}
"""


# -- the command -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; print the tables; write the docs page unless ``--no-write``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (about 45 s)")
    parser.add_argument("--output", type=Path, default=DOCS_PAGE, help="page to write")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    settings = Settings.for_quick() if args.quick else Settings()
    with redis_server() as server:
        _say(f"redis-server pid {server.pid} on {server.url}")
        report = run_all(server.url, settings)
        gateway = run_gateway(
            server.url, GatewaySettings.for_quick() if args.quick else GatewaySettings()
        )
    print(render_text(report))
    print(render_gateway_text(gateway))
    if not args.no_write:
        page = render_markdown(report) + "\n" + render_markdown_section(gateway)
        args.output.write_text(page, encoding="utf-8")
        _say(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
