"""Smoke tests of ``benchmarks/``: tiny counts, well-formed results. No timing is asserted."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add the root
    sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    machine_info,
    markdown_table,
    percentile,
)
from benchmarks.bench_batch import BatchResult, LoopSample, run_batch  # noqa: E402
from benchmarks.bench_groups import GroupResult, run_groups  # noqa: E402
from benchmarks.bench_latency import (  # noqa: E402
    LatencyResult,
    LatencyStats,
    run_delivery_micro,
    run_latency,
)
from benchmarks.bench_publish import MicroResult, ThroughputResult, run_micro, run_publish  # noqa: E402
from benchmarks.run import Report, Settings, render_markdown, render_text  # noqa: E402


def test_publish_benchmark_reports_positive_rates_per_round(redis_url: str) -> None:
    """run_publish gives one raw and one ours rate per round, with one subscriber reached."""
    result = run_publish(redis_url, messages=20, rounds=2)
    assert len(result.raw_rates) == len(result.ours_rates) == 2
    assert all(rate > 0 for rate in (*result.raw_rates, *result.ours_rates))
    assert result.receivers == 1
    assert result.raw_bytes > 100
    assert result.ours_bytes > 100
    assert result.paired_ratio > 0


def test_batch_benchmark_sends_full_batches_and_measures_both_threads(redis_url: str) -> None:
    """run_batch gives one sample per side per round; raw makes ceil(N/B) round trips,
    ours sends every event in counted round trips, and the CPU times are measured."""
    result = run_batch(redis_url, messages=45, rounds=2, batch_size=10, batch_interval=0.005)
    assert len(result.raw) == len(result.ours) == 2
    assert result.receivers == 1
    assert result.paired_ratio > 0
    for raw, ours in zip(result.raw, result.ours, strict=True):
        assert min(raw.rate, ours.rate, raw.caller_cpu, ours.caller_cpu, ours.process_cpu) > 0
        assert (raw.round_trips, raw.smallest_batch, raw.largest_batch) == (5, 5, 10)
        assert ours.round_trips >= 5
        assert 1 <= ours.smallest_batch <= ours.largest_batch <= 10
        assert ours.flusher_cpu is not None
        assert ours.send_cpu is not None
        assert 0 < ours.send_cpu <= ours.flusher_cpu
        assert 0 < ours.loop_share <= 1


def test_latency_benchmark_receives_every_event_with_ordered_percentiles(redis_url: str) -> None:
    """run_latency gets every measured event on both sides; p50 <= p90 <= p99 <= max."""
    result = run_latency(redis_url, rate=400.0, seconds=0.1, warmup=0.02, rounds=2)
    for side in (result.raw, result.ours):
        assert side.sent == 40
        assert side.received == side.sent
        assert 0 < side.p50 <= side.p90 <= side.p99 <= side.max
        assert side.mean > 0


def test_micro_benchmarks_time_every_piece() -> None:
    """run_micro and run_delivery_micro give a positive time for each named piece."""
    publish = run_micro(number=20, repeat=1)
    delivery = run_delivery_micro(number=20, repeat=1)
    assert "bus.publish on memory://" in [r.name for r in publish]
    assert "decode" in [r.name for r in delivery]
    for results in (publish, delivery):
        assert len({r.name for r in results}) == len(results)
        assert all(r.usec > 0 for r in results)


def test_percentile_is_nearest_rank() -> None:
    """percentile picks the nearest-rank sample."""
    ordered = [float(i) for i in range(1, 101)]
    assert percentile(ordered, 0.5) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 1.0) == 100.0
    assert percentile([3.0], 0.5) == 3.0


def _sample(rate: float, **fields: float) -> LoopSample:
    return LoopSample(
        rate=rate,
        round_trips=100,
        smallest_batch=100,
        largest_batch=100,
        caller_cpu=20.0,
        process_cpu=20.5,
        **fields,
    )


def _report(url: str) -> Report:
    ours = {"flusher_cpu": 9.0, "send_cpu": 8.5, "loop_share": 0.6}
    stats = LatencyStats(sent=10, received=10, p50=0.4, p90=0.5, p99=0.9, max=1.2, mean=0.45)
    return Report(
        settings=Settings.for_quick(),
        machine=machine_info(url),
        publish=ThroughputResult(
            messages=10,
            rounds=2,
            receivers=1,
            raw_rates=(1000.0, 1100.0),
            ours_rates=(950.0, 1000.0),
            raw_bytes=360,
            ours_bytes=350,
        ),
        batch=BatchResult(
            messages=10_000,
            rounds=2,
            batch_size=100,
            batch_interval=0.01,
            max_buffer=10_000,
            receivers=1,
            raw=(_sample(20_000.0), _sample(22_000.0)),
            ours=(_sample(19_000.0, **ours), _sample(22_000.0, **ours)),
        ),
        latency=LatencyResult(rate=100.0, seconds=0.1, rounds=1, raw=stats, ours=stats),
        micro=[MicroResult(name="new_event_id", usec=1.5, note="ULID")],
        delivery_micro=[MicroResult(name="decode", usec=9.0, note="")],
        groups=[GroupResult(consumers=1, events=10, raw=(100.0, 110.0), ours=(90.0, 100.0))],
        elapsed=1.0,
        load_after="0.50, 0.40, 0.30",
    )


def test_markdown_page_has_one_title_and_every_table(redis_url: str) -> None:
    """The docs page starts with its only `#` title and holds each table and the targets."""
    page = render_markdown(_report(redis_url))
    assert page.startswith("# Benchmarks\n")
    assert len(re.findall(r"^# ", page, flags=re.MULTILINE)) == 1
    headings = re.findall(r"^#+ .*$", page, flags=re.MULTILINE)
    assert len(headings) == len(set(headings))
    for row in ("| median events/s |", "| p99 |", "| `new_event_id` |", "| `decode` |"):
        assert row in page
    assert "| publish throughput, ours vs raw | at least 90% | 93.0% | pass |" in page
    target = "| batched publish throughput, ours vs raw pipeline | at least 100% | 97.5% | MISS |"
    assert target in page
    assert "| round trips per round (median) | 100 | 100 |  |" in page
    assert "| CPU µs per event, flusher thread |  | 9.0 |  |" in page
    assert "| CPU |" in page
    assert "| load average at the end | 0.50, 0.40, 0.30 |" in page
    assert re.search(r"<[A-Za-z/!]", page) is None  # no raw HTML


def test_text_report_lists_targets(redis_url: str) -> None:
    """The terminal report shows each section and the target results."""
    text = render_text(_report(redis_url))
    headings = (
        "Publish throughput",
        "Batched publish",
        "latency",
        "Publish path pieces",
        "Targets",
    )
    for heading in headings:
        assert heading in text
    assert "pass" in text


def test_markdown_table_escapes_pipes() -> None:
    """A pipe inside a cell cannot split the row."""
    table = markdown_table(("a", "b"), [("x|y", 1)], right=(1,))
    assert table.splitlines() == ["| a | b |", "| --- | ---: |", "| x/y | 1 |"]


def test_group_benchmark_runs_with_tiny_counts(redis_url: str) -> None:
    """run_groups drains a small stream with raw redis-py and with eventbus consumers."""
    result = run_groups(redis_url, events=50, consumers=2, rounds=1)
    assert result.consumers == 2
    assert len(result.raw) == len(result.ours) == 1
    assert result.raw_median > 0
    assert result.ours_median > 0
    assert result.ratio > 0
