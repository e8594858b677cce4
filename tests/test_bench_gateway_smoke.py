"""Smoke test of ``benchmarks/bench_gateway.py``: 20 connections, well-formed results.

A real gateway process and real client processes (python-socketio ``AsyncClient``) on
the test Redis; nothing about speed or memory is asserted.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

from _servers import RedisServer, in_ci

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add the root
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_gateway import (  # noqa: E402
    SECTION_TITLE,
    GatewayResult,
    GatewaySettings,
    render_markdown_section,
    render_text,
    run_gateway,
    update_page,
)


@pytest.fixture(scope="module")
def smoke_result(redis_server: RedisServer) -> GatewayResult:
    """One smoke run for the module (the session Redis, flushed first)."""
    if importlib.util.find_spec("aiohttp") is None:
        reason = "the gateway benchmark's clients need aiohttp (python-socketio AsyncClient)"
        if in_ci():
            pytest.fail(f"CI is set, so this is an error: {reason}")
        pytest.skip(reason)
    redis_server.flushall()
    return run_gateway(redis_server.url, GatewaySettings.for_smoke())


def test_every_delivery_arrives_in_every_phase(smoke_result: GatewayResult) -> None:
    """Both layouts, paced and burst: every socket of a room gets every event once,
    and the latency quantiles are ordered."""
    settings = GatewaySettings.for_smoke()
    assert smoke_result.connections == settings.connections
    assert smoke_result.dropped == 0
    assert [(p.room_size, p.mode) for p in smoke_result.phases] == [
        (settings.room_size, "paced"),
        (settings.room_size, "burst"),
        (settings.connections, "paced"),
        (settings.connections, "burst"),
    ]
    for phase in smoke_result.phases:
        assert phase.expected == phase.publishes * phase.room_size
        assert phase.received == phase.expected, phase
        assert len(phase.latencies) == phase.received
        assert 0 <= phase.quantile(0.5) <= phase.quantile(0.99) <= phase.max
        assert phase.seconds > 0
        assert phase.deliveries_per_s > 0
        assert phase.gateway_cpu >= 0


def test_memory_is_read_from_the_gateway_process(smoke_result: GatewayResult) -> None:
    """VmRSS is read before and after the sockets connected (a live Python process
    holds megabytes), and the per-connection figure follows from them."""
    assert smoke_result.rss_before_kb > 10_000
    assert smoke_result.rss_after_kb > 10_000
    expected = (smoke_result.rss_after_kb - smoke_result.rss_before_kb) / 20
    assert math.isclose(smoke_result.kb_per_connection, expected)


def test_section_renders_every_table_and_replaces_itself(
    smoke_result: GatewayResult, tmp_path: Path
) -> None:
    """The Markdown section has its one heading, the targets, no raw HTML; updating a
    page twice keeps the rest of the page and one copy of the section."""
    section = render_markdown_section(smoke_result)
    assert section.startswith(SECTION_TITLE + "\n")
    assert "| per connection |" in section
    assert "deliveries/s (burst)" in section
    assert re.search(r"<[A-Za-z/!]", section) is None
    assert "Gateway targets" in render_text(smoke_result)
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nintro\n\n## Durable group throughput\n\ntable\n")
    update_page(page, section)
    update_page(page, section)
    text = page.read_text()
    assert text.count(SECTION_TITLE) == 1
    assert text.startswith("# Benchmarks\n\nintro\n\n## Durable group throughput\n\ntable\n\n")
    assert text.endswith(section)
