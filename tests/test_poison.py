"""Poison messages: undecodable payloads are counted, reported, logged once, and skipped.

Each runs on both transports: memory:// (raw bytes put on the broker through the bus's
own transport) and real Redis (raw bytes PUBLISHed by a plain redis-py client).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from eventbus import DecodeError, Event, EventBus, EventBusError

from _helpers import Recorder, wait_for

RawPublish = Callable[[str, bytes], None]

_VALID = json.loads(
    '{"specversion":"1.0","id":"01JDQ7Z8X5N6M4K3J2H1G0F9E8","source":"outsider",'
    '"type":"poison.valid","time":"2026-11-28T17:51:09.123456Z",'
    '"datacontenttype":"application/json","data":{"n":1}}'
)

POISON: dict[str, tuple[bytes, str]] = {
    "bad-utf8": (b"\xff\xfe\xfd not utf-8", "utf8"),
    "not-json": (b"{this is not json", "json"),
    "json-array": (b"[1, 2, 3]", "envelope"),
    "missing-type": (json.dumps({**_VALID, "type": None}).encode(), "envelope"),
    "id-not-a-string": (json.dumps({**_VALID, "id": 42}).encode(), "envelope"),
    "ebheaders-not-json": (json.dumps({**_VALID, "ebheaders": "{oops"}).encode(), "envelope"),
    "specversion-0.3": (json.dumps({**_VALID, "specversion": "0.3"}).encode(), "specversion"),
    # json.loads raises RecursionError, not ValueError, on this.
    "nested-100k-deep": (b"[" * 100_000 + b"]" * 100_000, "json"),
}


@pytest.fixture
def bus(transport_url: str) -> Iterator[EventBus]:
    """A connected bus on the test's broker."""
    bus = EventBus.from_url(transport_url, service_name="poison-test")
    bus.connect()
    try:
        yield bus
    finally:
        bus.disconnect(timeout=2.0)


@pytest.fixture
def raw_publish(bus: EventBus, transport_url: str, request: pytest.FixtureRequest) -> RawPublish:
    """Put raw bytes on a channel, bypassing the bus's encoder."""
    if transport_url.startswith("memory://"):
        transport = bus._require_connected()

        def put(channel: str, payload: bytes) -> None:
            assert transport.publish(channel, payload, 1.0) == 1  # the bus is subscribed

        return put

    client = request.getfixturevalue("redis_client")

    def publish(channel: str, payload: bytes) -> None:
        assert client.publish(channel, payload) == 1  # the bus is subscribed

    return publish


class ErrorLog:
    """An on_error hook that records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[EventBusError, Event | None]] = []
        self._lock = threading.Lock()

    def __call__(self, error: EventBusError, event: Event | None) -> None:
        with self._lock:
            self.calls.append((error, event))

    def decode_errors(self) -> list[DecodeError]:
        with self._lock:
            return [error for error, _ in self.calls if isinstance(error, DecodeError)]


def _undecodable_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING and "undecodable" in record.getMessage()
    ]


@pytest.mark.parametrize("name", list(POISON))
def test_poison_message_is_counted_reported_and_skipped(
    bus: EventBus, raw_publish: RawPublish, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad payload on a subscribed channel is a decode error; the next event still arrives."""
    caplog.set_level(logging.WARNING, logger="eventbus")
    payload, kind = POISON[name]
    errors = ErrorLog()
    bus.on_error(errors)
    got = Recorder()
    bus.subscribe("poison.*", got)
    channel = bus.publish("poison.first").channel  # the channel of poison.first
    got.wait(1)

    raw_publish(channel, payload)
    bus.publish("poison.after", {"ok": True})

    events = got.wait(2)
    assert [e.type for e in events] == ["poison.first", "poison.after"]
    wait_for(lambda: errors.decode_errors(), what="the decode error hook")
    (error,) = errors.decode_errors()
    assert error.kind == kind
    assert error.channel == channel
    assert error.payload == payload[:200]
    assert [event for _, event in errors.calls] == [None]
    stats = bus.get_stats()
    assert stats.decode_errors == 1
    assert stats.events_handled == 2
    # Handled as a decode error, never as a crash of the transport's message sink.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_each_kind_is_logged_once_and_every_message_counted(
    bus: EventBus, raw_publish: RawPublish, caplog: pytest.LogCaptureFixture
) -> None:
    """Two of each kind of poison: every one counted and reported, one warning per kind."""
    caplog.set_level(logging.WARNING, logger="eventbus")
    errors = ErrorLog()
    bus.on_error(errors)
    got = Recorder()
    bus.subscribe("poison.*", got)
    channel = bus.publish("poison.first").channel
    got.wait(1)

    for _round in range(2):
        for payload, _kind in POISON.values():
            raw_publish(channel, payload)
    raw_publish(channel, json.dumps(_VALID).encode())  # a valid envelope from outside
    bus.publish("poison.last")

    events = got.wait(3)
    assert [e.type for e in events] == ["poison.first", "poison.valid", "poison.last"]
    assert events[1].source == "outsider"
    assert events[1].data == {"n": 1}
    sent_kinds = [kind for _payload, kind in POISON.values()] * 2
    wait_for(lambda: len(errors.decode_errors()) == len(sent_kinds), what="every decode error")
    assert [e.kind for e in errors.decode_errors()] == sent_kinds
    assert bus.get_stats().decode_errors == len(sent_kinds)
    warnings = _undecodable_warnings(caplog)
    logged_kinds = [record.args[1].kind for record in warnings]  # type: ignore[index]
    assert sorted(logged_kinds) == sorted(set(sent_kinds))


def test_without_hooks_a_flood_of_poison_logs_one_warning(
    bus: EventBus, raw_publish: RawPublish, caplog: pytest.LogCaptureFixture
) -> None:
    """With no on_error hook, 20 bad messages are all counted but logged once, not per message."""
    caplog.set_level(logging.DEBUG, logger="eventbus")
    got = Recorder()
    bus.subscribe("poison.*", got)
    channel = bus.publish("poison.first").channel
    got.wait(1)
    for _ in range(20):
        raw_publish(channel, b"\x00\x01 garbage")
    bus.publish("poison.after")
    got.wait(2)
    wait_for(lambda: bus.get_stats().decode_errors == 20, what="every decode error counted")
    warnings = _undecodable_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].args[1].kind == "json"  # type: ignore[index]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
