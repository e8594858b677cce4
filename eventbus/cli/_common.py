"""What every ``eventbus`` command shares: exit codes, argument types, output, connecting."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any, TextIO

from eventbus import (
    BusStateError,
    Event,
    EventBus,
    EventBusConfig,
    TransportError,
)

__all__ = [
    "EPILOG",
    "EXIT_CANNOT_CONNECT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CannotConnectError",
    "StopListening",
    "UsageError",
    "add_command",
    "bounded",
    "cannot_connect",
    "check_before_connecting",
    "config_from_args",
    "connected",
    "dumps",
    "event_as_json",
    "flush_stdio",
    "format_event",
    "format_table",
    "header_pair",
    "listen",
    "logging_to_stderr",
    "note_if_in_process",
    "positive_int",
    "print_error",
    "seconds",
    "sigterm_stops_listening",
    "silence_stdout",
    "speed",
    "write_line",
]

EXIT_OK = 0  # it did what it was asked
EXIT_FAILURE = 1  # it ran and failed: the demo missed events, `health` is degraded...
EXIT_USAGE = 2  # bad arguments or input (an option, JSON, a name); nothing was sent
EXIT_CANNOT_CONNECT = 3  # the transport could not be reached

_DISCONNECT_TIMEOUT = 2.0
_MAX_DATA_CHARS = 400  # of the readable `listen` format; --json prints everything

EPILOG = """\
exit codes: 0 ok; 1 failure; 2 usage error or bad input (nothing was sent);
3 cannot connect. `health` exits 0 healthy, 1 degraded, 2 unhealthy.
"""


class CannotConnectError(Exception):
    """The bus's transport could not be reached; the message names the masked URL."""


class UsageError(Exception):
    """Bad input the parser could not catch (e.g. DATA that is not JSON)."""


class StopListening(Exception):
    """Raised by the SIGTERM handler of ``listen`` to leave its loop."""


# -- argument types ------------------------------------------------------------------------


def header_pair(text: str) -> tuple[str, str]:
    """An argparse type: ``K=V`` as a ``(key, value)`` pair."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def bounded(kind: Callable[[str], float], low: float, *, strict: bool) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` above ``low`` (or equal, if not strict)."""
    rule = f"{'>' if strict else '>='} {low:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    return parse


positive_int = bounded(int, 1, strict=False)
seconds = bounded(float, 0, strict=True)
speed = bounded(float, 0, strict=False)


# -- the parser ----------------------------------------------------------------------------
def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Callable[[argparse.Namespace, EventBusConfig], int],
    summary: str,
    description: str,
    *,
    json_help: str | None = None,
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` that runs ``run``, with the shared epilog (and ``--json``)."""
    parser = commands.add_parser(name, help=summary, description=description, epilog=EPILOG)
    parser.set_defaults(run=run)
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def config_from_args(args: argparse.Namespace) -> EventBusConfig:
    """The CLI bus's config: --url, else the environment; logging stays ours (-v)."""
    if args.url is not None:
        return EventBusConfig.from_url(args.url, service_name=args.service_name)
    return EventBusConfig.from_env(service_name=args.service_name, log_level=None)


@contextlib.contextmanager
def logging_to_stderr(*, verbose: bool) -> Iterator[None]:
    """Send the ``eventbus`` logger to stderr for the command's duration, then restore it."""
    logger = logging.getLogger("eventbus")
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "eventbus: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def print_error(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"eventbus: {' '.join(message.split())}", file=sys.stderr, flush=True)


def note_if_in_process(config: EventBusConfig) -> None:
    """Warn on stderr that a ``memory://`` bus shares nothing with other processes."""
    if config.transport_url.startswith("memory:"):
        print_error(
            f"note: {config.transport_url} is this process's own broker; no other process "
            "shares it (give --url or set EVENTBUS_URL)"
        )


def silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush cannot fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stdout = sys.__stdout__
        if stdout is not None and sys.stdout is stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())


@contextlib.contextmanager
def connected(bus: EventBus) -> Iterator[EventBus]:
    """Connect ``bus`` (a failure becomes :class:`CannotConnectError`); disconnect on exit."""
    try:
        bus.connect()
    except TransportError as exc:
        raise cannot_connect(bus.config, exc) from exc
    try:
        yield bus
    finally:
        bus.disconnect(timeout=_DISCONNECT_TIMEOUT)


def cannot_connect(config: EventBusConfig, exc: TransportError) -> CannotConnectError:
    """The :class:`CannotConnectError` for a failed connect, naming the masked URL."""
    # transport_url masks the password; the cause is redis-py's own one-liner
    return CannotConnectError(f"cannot connect to {config.transport_url}: {exc.__cause__ or exc}")


def check_before_connecting(call: Callable[[], object]) -> None:
    """Validate a call's arguments without any I/O: run it on a bus not yet connected.

    The bus checks names, data and size first (raising :class:`ValidationError`) and
    only then refuses with :class:`BusStateError`, which is expected here. So bad input
    exits 2 even when the server is unreachable, and nothing is ever sent.
    """
    with contextlib.suppress(BusStateError):
        call()


def dumps(value: Any) -> str:
    """Compact JSON that keeps non-ASCII text readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_line(line: str, out: TextIO) -> None:
    """Print one line and flush it (so pipes see it at once), whatever the encoding."""
    try:
        print(line, file=out, flush=True)
    except UnicodeEncodeError:
        print(line.encode("ascii", "backslashreplace").decode("ascii"), file=out, flush=True)


def event_as_json(event: Event) -> dict[str, Any]:
    """The fields of ``event`` that ``eventbus listen --json`` prints, as JSON data."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time.isoformat(),
        "room": event.room,
        "user": event.user,
        "broadcast": event.broadcast,
        "headers": dict(event.headers),
        "data": event.data,
    }


def format_event(event: Event) -> str:
    """One readable line: local time, type, source, room (or broadcast), compact data.

    Example: ``14:03:07.218  photo.uploaded              photo-api  {"photoId":"123"}``
    """
    when = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
    where = f"  room={event.room}" if event.room else "  broadcast" if event.broadcast else ""
    data = dumps(event.data)
    if len(data) > _MAX_DATA_CHARS:
        data = data[: _MAX_DATA_CHARS - 3] + "..."
    return f"{when}  {event.type:<26}  {event.source}{where}  {data}"


@contextlib.contextmanager
def sigterm_stops_listening() -> Iterator[None]:
    """Turn SIGTERM into :class:`StopListening` (main thread only; restored on exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise StopListening

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def format_table(rows: Sequence[Sequence[str]], text_columns: int) -> list[str]:
    """Align ``rows`` (the first is the header): text columns left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def flush_stdio() -> None:
    """Flush stdout and stderr, ignoring a closed or broken stream (before ``os._exit``)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def listen(
    bus: EventBus,
    events: queue.SimpleQueue[Event],
    *,
    rooms: Sequence[str],
    count: int | None,
    deadline: float | None,
    announce: Callable[[str], None],
    show: Callable[[Event], None],
) -> int | None:
    """The loop of ``listen`` (also ``flask eventbus listen``) on a connected ``bus``.

    Joins ``rooms``, calls ``announce`` with the rooms' part of the ready line, then
    passes each event the subscription put on ``events`` to ``show`` until ``count``
    events were shown or the ``deadline`` (``time.monotonic()``) passed.

    Returns:
        How many events were shown, or None when Ctrl-C or SIGTERM ended the loop
        (inside :func:`sigterm_stops_listening`).
    """
    seen = 0
    try:
        for room in rooms:
            bus.join_room(room)
        announce(f" and rooms {', '.join(rooms)}" if rooms else "")
        while count is None or seen < count:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                event = events.get(timeout=wait)
            except queue.Empty:
                continue
            show(event)
            seen += 1
    except (KeyboardInterrupt, StopListening):
        return None
    return seen
