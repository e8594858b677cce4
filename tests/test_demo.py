"""``eventbus demo``: the photo pipeline of the Node README, on memory:// and on Redis."""

from __future__ import annotations

import io
import threading

import pytest

from eventbus import Event, EventBusConfig
from eventbus.cli import main
from eventbus.cli._demo import _Demo, demo_config, expected_deliveries, run_demo

#: What the run must print, in causal order, for each upload (README examples 1-3):
#: the steps of one upload follow each other; the two uploads interleave freely.
COMPLETED_UPLOAD = [
    "photo-api             sends       photo.uploaded              photo 123 vacation.jpg",
    "photo-worker          gets        photo.uploaded              photo 123",
    "photo-worker          sends       photo.processing.started    photo 123",
    "photo-worker          sends       photo.processing.progress   photo 123 validation 25%",
    "photo-worker          sends       photo.processing.progress   photo 123 resize 50%",
    "photo-worker          sends       photo.processing.progress   photo 123 thumbnail 75%",
    "photo-worker          sends       photo.processing.progress   photo 123 optimize 100%",
    "photo-worker          sends       photo.processing.completed  photo 123",
    "notification-service  gets        photo.processing.completed  photo 123",
    "notification-service  sends       notification.new            'Your photo is ready!'",
    "browser               shows       notification.new            Your photo is ready!",
]
FAILED_UPLOAD = [
    "photo-api             sends       photo.uploaded              photo 124 panorama.tiff",
    "photo-worker          gets        photo.uploaded              photo 124",
    "photo-worker          sends       photo.processing.started    photo 124",
    "photo-worker          sends       photo.processing.progress   photo 124 validation 25%",
    "photo-worker          sends       photo.processing.failed     photo 124 at resize",
    "notification-service  gets        photo.processing.failed     photo 124",
    "notification-service  sends       notification.new            'Photo processing failed'",
    "browser               shows       notification.new            Photo processing failed",
]
#: The worker handles one upload at a time, in order (a FIFO subscription).
WORKER_ORDER = [
    "photo-worker          sends       photo.processing.completed  photo 123",
    "photo-worker          gets        photo.uploaded              photo 124",
]


def _assert_pipeline(out: str) -> None:
    for steps in (COMPLETED_UPLOAD, FAILED_UPLOAD, WORKER_ORDER):
        _assert_in_order(out, steps)
    assert out.count("audit-log             gets        photo.processing.") == 9
    assert "audit-log             gets        photo.uploaded" not in out  # *.processing.* only
    assert "MISSING" not in out
    assert "UNEXPECTED" not in out


def _assert_in_order(out: str, steps: list[str]) -> None:
    position = 0
    for step in steps:
        found = out.find(step, position)
        assert found >= 0, f"missing, or out of order: {step!r}\n{out}"
        position = found + len(step)


def test_demo_on_memory_exits_0_and_prints_each_step(capsys: pytest.CaptureFixture[str]) -> None:
    """`eventbus demo --speed 0.1` runs the pipeline on a fresh memory:// broker and exits 0,
    printing every step in order, the audit log, and a summary with stats and health."""
    assert main(["demo", "--speed", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "on memory://demo-" in out
    _assert_pipeline(out)
    _assert_in_order(
        out,
        [
            "summary after",
            "browser               notification.new            2/2  ok",
            "bus stats (get_stats):",
            "photo-worker             9     2        2       0        0",
            "health (health_check):",
            "photo-api             healthy",
            "OK: all 15 expected deliveries arrived",
        ],
    )


def test_demo_on_redis_exits_0_under_a_prefix_of_its_own(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --url redis://... the demo runs on Redis under `<prefix>demo-<run>:` and exits 0."""
    assert main(["--url", f"{redis_url}?key_prefix=mine:", "demo", "--speed", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "(key prefix mine:demo-" in out
    assert "redis ping" in out
    _assert_pipeline(out)
    assert "OK: all 15 expected deliveries arrived" in out


@pytest.mark.parametrize("transport", ["memory", "redis"])
def test_concurrent_demos_do_not_mix(request: pytest.FixtureRequest, transport: str) -> None:
    """Two demos at once on one broker both succeed: each run gets a broker or prefix of its
    own (if they mixed, each would see the other's events and report them UNEXPECTED)."""
    url = "memory://" if transport == "memory" else request.getfixturevalue("redis_url")
    config = EventBusConfig.from_url(url, service_name="demo-test")
    outputs = [io.StringIO(), io.StringIO()]
    results: list[bool] = []

    def run(out: io.StringIO) -> None:
        results.append(run_demo(config, speed=0.1, out=out))

    threads = [threading.Thread(target=run, args=(out,)) for out in outputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [True, True], [out.getvalue() for out in outputs]


def test_demo_config_gives_each_run_its_own_broker() -> None:
    """memory:// gets a fresh broker name; Redis keeps its server and appends to its prefix."""
    memory = EventBusConfig.from_url("memory://", service_name="x")
    assert demo_config(memory, "r1").transport_url == "memory://demo-r1"
    assert demo_config(EventBusConfig(service_name="x"), "r2").transport_url == "memory://demo-r2"
    redis = EventBusConfig.from_url("redis://:pw@h:6380/2?key_prefix=app:", service_name="x")
    derived = demo_config(redis, "r3")
    assert derived.key_prefix == "app:demo-r3:"
    assert derived.transport_url == "redis://:***@h:6380/2"


def test_expected_deliveries_follow_the_readme_pipeline() -> None:
    """One upload completes (4 progress events), the other fails at resize (1 progress)."""
    expected = expected_deliveries()
    assert expected["photo-worker", "photo.uploaded"] == 2
    assert expected["audit-log", "photo.processing.progress"] == 5
    assert expected["notification-service", "photo.processing.completed"] == 1
    assert expected["notification-service", "photo.processing.failed"] == 1
    assert expected["browser", "notification.new"] == 2
    assert sum(expected.values()) == 15


def test_demo_exits_1_and_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """When the browser never gets its notifications the demo exits 1 at its deadline and
    lists what is missing."""

    def deaf(self: _Demo, event: Event) -> None:
        del self, event

    monkeypatch.setattr(_Demo, "on_notification", deaf)
    monkeypatch.setattr("eventbus.cli._demo.DEADLINE", 0.5)
    assert main(["demo", "--speed", "0"]) == 1
    out = capsys.readouterr().out
    assert "browser               notification.new            0/2  MISSING" in out
    assert "FAILED:" in out
    assert "browser got 0 of 2 notification.new" in out


def test_demo_exits_1_when_a_handler_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handler that raises is reported through the error hook and fails the run at once."""

    def broken(self: _Demo, event: Event) -> None:
        raise RuntimeError(f"notifier down ({event.type})")

    monkeypatch.setattr(_Demo, "on_outcome", broken)
    assert main(["demo", "--speed", "0"]) == 1
    out = capsys.readouterr().out
    assert "!!!  notification-service:" in out
    assert "notifier down" in out
    assert "FAILED:" in out


@pytest.mark.parametrize("speed", ["-1", "fast", "nan"])
def test_demo_speed_must_be_a_number_at_least_0(
    speed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--speed takes a finite number >= 0; anything else is a usage error (2)."""
    assert main(["demo", "--speed", speed]) == 2
    assert "--speed" in capsys.readouterr().err
