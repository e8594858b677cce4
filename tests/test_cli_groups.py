"""The durable-group commands of ``eventbus``: ``groups`` and ``dlq list|replay|purge``,
in-process through ``main()`` against real Redis."""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from eventbus import Event, EventBus, GroupOptions, PerformanceConfig
from eventbus.cli import main
from eventbus.cli._groups import _age, _envelope, _field

from _helpers import Recorder, wait_for

BusFactory = Callable[..., EventBus]
# Fails fast: a failing event is taken over after 0.3 s and given up after 2 deliveries.
FAST = GroupOptions(claim_idle=0.3, max_deliveries=2, block=0.1)


@pytest.fixture
def url(redis_url: str) -> str:
    """The session Redis, under a key prefix of this test's own."""
    return f"{redis_url}?key_prefix=clig{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def make_bus(url: str) -> Iterator[BusFactory]:
    """Connected buses on the test's Redis prefix, disconnected at teardown."""
    buses: list[EventBus] = []

    def make(service_name: str = "spy", **options: Any) -> EventBus:
        options.setdefault("performance", PerformanceConfig(retry_delay=0.01))
        bus = EventBus.from_url(url, service_name=service_name, **options)
        buses.append(bus)
        bus.connect()
        return bus

    yield make
    for bus in buses:
        bus.disconnect(timeout=2.0)


@pytest.fixture
def unreachable_url() -> str:
    """A Redis URL on a loopback port nobody listens on, with short timeouts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0?socket_connect_timeout=0.5&socket_timeout=0.5"


class _Worker:
    """A group subscriber whose handler fails until :meth:`fix` is called."""

    def __init__(self, make_bus: BusFactory, group: str = "thumbs") -> None:
        self.fixed = threading.Event()
        self.handled = Recorder()
        self.bus = make_bus("thumbnailer")
        self.bus.subscribe("photo.*", self._handle, group=group, group_options=FAST)
        self.publisher = make_bus("photo-api")
        self.publisher.get_group_patterns()  # the publisher knows the group from now on

    def _handle(self, event: Event) -> None:
        if not self.fixed.is_set():
            raise RuntimeError("thumbnail service down")
        self.handled(event)

    def fix(self) -> None:
        self.fixed.set()

    def dead_letter(self, *data: Any, group: str = "thumbs") -> list[str]:
        """Publish one event per ``data`` and wait until all are dead letters; their ids."""
        before = len(self.publisher.dead_letters(group))
        ids = [self.publisher.publish("photo.uploaded", item).event_id for item in data]
        wait_for(
            lambda: len(self.publisher.dead_letters(group)) >= before + len(data),
            timeout=20,
            what=f"{len(data)} dead letter(s)",
        )
        return ids


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = _run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


# -- the dead-letter round trip ------------------------------------------------------------


def test_dead_letter_is_listed_replayed_and_handled(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing handler's event shows in `dlq list` with its error and envelope, `groups`
    counts it, and `dlq replay` puts it back where the fixed handler handles it."""
    worker = _Worker(make_bus)
    (event_id,) = worker.dead_letter({"photoId": "1"})

    (letter,) = _json(capsys, "--url", url, "dlq", "list", "thumbs")
    assert letter["type"] == "photo.uploaded"
    assert letter["event_id"] == event_id
    assert "thumbnail service down" in letter["error"]
    assert letter["deliveries"] == 2
    assert letter["consumer"].startswith("thumbnailer:")
    assert letter["source_id"]
    assert letter["id"] != letter["source_id"]
    envelope = letter["envelope"]
    assert envelope["id"] == event_id
    assert envelope["source"] == "photo-api"
    assert envelope["data"] == {"photoId": "1"}
    assert "payload" not in letter

    code, out, _ = _run(capsys, "--url", url, "dlq", "list", "thumbs")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "SOURCE", "ID", "TYPE"]
    assert row.split()[:4] == [letter["id"], letter["source_id"], "photo.uploaded", event_id]
    assert "RuntimeError('thumbnail service down')" in row

    (group,) = _json(capsys, "--url", url, "groups")
    assert group["name"] == "thumbs"
    assert group["pattern"] == "photo.*"
    assert group["dead_letters"] == 1
    assert group["pending"] == 0
    assert group["consumers"] >= 1
    assert group["length"] >= 1

    worker.fix()
    code, out, _ = _run(capsys, "--url", url, "dlq", "replay", "thumbs")
    assert code == 0
    assert out == "replayed 1 dead letter(s) into group thumbs\n"
    (handled,) = worker.handled.wait(1, timeout=10)
    assert handled.id == event_id
    assert handled.data == {"photoId": "1"}
    assert handled.delivery_attempt == 1, "a replayed event is a new entry of the stream"
    assert _json(capsys, "--url", url, "dlq", "list", "thumbs") == []
    wait_for(lambda: worker.bus.get_groups()["thumbs"].pending == 0, what="the ack")
    (group,) = _json(capsys, "--url", url, "groups")
    assert (group["dead_letters"], group["pending"], group["lag"]) == (0, 0, 0)


def test_replay_by_id_and_purge(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq replay GROUP ID` moves only that dead letter and counts ids it did not find;
    `dlq purge --yes` deletes the rest; `--count` limits `dlq list`."""
    worker = _Worker(make_bus)
    first, _second = worker.dead_letter(1, 2)
    letters = _json(capsys, "--url", url, "dlq", "list", "thumbs")
    assert [letter["event_id"] for letter in letters] == [first, _second]

    code, _, err = _run(capsys, "--url", url, "dlq", "list", "thumbs", "--count", "1")
    assert code == 0
    assert "there are more" in err

    worker.fix()
    code, out, _ = _run(capsys, "--url", url, "dlq", "replay", "thumbs", letters[0]["id"], "1-1")
    assert code == 0
    assert out == "replayed 1 of 2 dead letter(s) (1 not found) into group thumbs\n"
    (handled,) = worker.handled.wait(1, timeout=10)
    assert handled.id == first

    code, out, _ = _run(capsys, "--url", url, "dlq", "purge", "thumbs", "--yes")
    assert code == 0
    assert out == "purged 1 dead letter(s) of group thumbs\n"
    assert _json(capsys, "--url", url, "dlq", "list", "thumbs") == []
    code, _, err = _run(capsys, "--url", url, "dlq", "list", "thumbs")
    assert code == 0
    assert "no dead letters" in err
    (group,) = _json(capsys, "--url", url, "groups")
    assert group["dead_letters"] == 0


def test_purge_asks_on_a_terminal_and_refuses_without_one(
    url: str,
    make_bus: BusFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --yes: stdin not a TTY exits 2 and deletes nothing; on a TTY, 'n' keeps the
    dead letters (exit 1) and 'y' purges them."""
    worker = _Worker(make_bus)
    worker.dead_letter("x")

    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = _run(capsys, "--url", url, "dlq", "purge", "thumbs")
    assert (code, out) == (2, "")
    assert "--yes" in err
    assert len(worker.publisher.dead_letters("thumbs")) == 1

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = _run(capsys, "--url", url, "dlq", "purge", "thumbs")
    assert (code, out) == (1, "")
    assert "delete the 1 dead letter(s) of group thumbs" in err
    assert "nothing was purged" in err
    assert len(worker.publisher.dead_letters("thumbs")) == 1

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    code, out, _ = _run(capsys, "--url", url, "dlq", "purge", "thumbs")
    assert (code, out) == (0, "purged 1 dead letter(s) of group thumbs\n")
    assert worker.publisher.dead_letters("thumbs") == []


# -- groups --------------------------------------------------------------------------------


def test_groups_table_lists_each_group(
    url: str, make_bus: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """The readable `groups` is an aligned table, one row per group, sorted by name."""
    consumer, publisher = make_bus(), make_bus()
    billing, audit = Recorder(), Recorder()
    consumer.subscribe("order.*", billing, group="billing", group_options=FAST)
    consumer.subscribe("audit.*", audit, group="audit", group_options=FAST)
    publisher.get_group_patterns()
    publisher.publish("order.placed", 1)
    publisher.publish("audit.logged", 2)
    billing.wait(1, timeout=10)
    audit.wait(1, timeout=10)
    wait_for(lambda: all(g.pending == 0 for g in consumer.get_groups().values()), what="the acks")

    code, out, _ = _run(capsys, "--url", url, "groups")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "GROUP",
        "PATTERN",
        "CONSUMERS",
        "BACKLOG",
        "PENDING",
        "OLDEST",
        "PENDING",
        "LENGTH",
        "DEAD",
    ]
    assert [row.split() for row in rows] == [
        ["audit", "audit.*", "1", "0", "0", "-", "1", "0"],
        ["billing", "order.*", "1", "0", "0", "-", "1", "0"],
    ]
    assert len({len(line) for line in (header, *rows)}) == 1, "columns are aligned"


def test_groups_without_any_says_so(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """No registered group: a note on stderr and exit 0; --json prints []."""
    code, out, err = _run(capsys, "--url", url, "groups")
    assert (code, out) == (0, "")
    assert "no durable group is registered" in err
    assert _json(capsys, "--url", url, "groups") == []


# -- bad input, unknown groups, unreachable servers ----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "list", "bad name"],
        ["dlq", "list", "no*globs"],
        ["dlq", "replay", "bad name"],
        ["dlq", "purge", "bad name", "--yes"],
        ["dlq", "purge", "x" * 101, "--yes"],
    ],
)
def test_invalid_group_names_exit_2_before_connecting(
    unreachable_url: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A group name the bus would refuse exits 2, even with the server unreachable."""
    code, out, err = _run(capsys, "--url", unreachable_url, *args)
    assert (code, out) == (2, "")
    assert "invalid group" in err


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "replay", "thumbs", "not-an-id"],
        ["dlq", "list", "thumbs", "--count", "0"],
        ["dlq"],
        ["dlq", "list"],
    ],
)
def test_bad_arguments_exit_2(
    unreachable_url: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad ids, counts and missing arguments are usage errors."""
    code, out, _ = _run(capsys, "--url", unreachable_url, *args)
    assert (code, out) == (2, "")


@pytest.mark.parametrize(
    "args",
    [
        ["groups"],
        ["dlq", "list", "thumbs"],
        ["dlq", "replay", "thumbs"],
        ["dlq", "purge", "thumbs", "--yes"],
    ],
)
def test_unreachable_server_exits_3(
    unreachable_url: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that cannot be reached exits 3 with the reason."""
    code, out, err = _run(capsys, "--url", unreachable_url, *args)
    assert (code, out) == (3, "")
    assert "cannot connect to redis://127.0.0.1:" in err


@pytest.mark.parametrize(
    "args", [["dlq", "list", "nope"], ["dlq", "replay", "nope"], ["dlq", "purge", "nope", "-y"]]
)
def test_unknown_group_exits_1(
    url: str, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid name that no group is registered under exits 1 and says so."""
    code, out, err = _run(capsys, "--url", url, *args)
    assert (code, out) == (1, "")
    assert "no group 'nope' is registered" in err


# -- helpers -------------------------------------------------------------------------------


def test_envelope_fields_are_question_marks_when_it_does_not_decode() -> None:
    """A payload that is no JSON object shows type and id as '?'."""
    for payload in (b"not json", b"\xff\xfe", b"[1, 2]", b'{"type": 5}'):
        envelope = _envelope(payload)
        assert (_field(envelope, "type"), _field(envelope, "id")) == ("?", "?")
    envelope = _envelope(b'{"type": "a.b", "id": "01X"}')
    assert (_field(envelope, "type"), _field(envelope, "id")) == ("a.b", "01X")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.42, "0.4s"), (59.9, "59.9s"), (187, "3m07s"), (7500, "2h05m"), (2e5, "2d07h")],
)
def test_age_is_short(seconds: float | None, text: str) -> None:
    """Ages in the OLDEST PENDING column."""
    assert _age(seconds) == text
