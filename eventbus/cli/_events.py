"""``eventbus publish`` and ``eventbus listen``."""

from __future__ import annotations

import argparse
import functools
import json
import queue
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs

from eventbus import (
    Event,
    EventBus,
    EventBusConfig,
    PublishResult,
)
from eventbus.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    add_command,
    check_before_connecting,
    connected,
    event_as_json,
    format_event,
    header_pair,
    listen,
    note_if_in_process,
    positive_int,
    print_error,
    seconds,
    sigterm_stops_listening,
    write_line,
)


def add_event_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``publish`` and ``listen`` to the ``eventbus`` command."""
    publish = add_command(
        commands,
        "publish",
        _run_publish,
        "publish one event",
        "Publish one event and print its id and how many subscriptions got it. Without "
        "--room, --user or --broadcast it goes to every subscription whose pattern "
        "matches TYPE. Bad JSON or names exit 2 before anything is sent.",
        json_help="print the PublishResult as JSON",
    )
    publish.add_argument("type", metavar="TYPE", help="the event type, e.g. photo.uploaded")
    data_help = "the payload as JSON (default: null); - reads it from stdin"
    publish.add_argument("data", metavar="DATA", nargs="?", default="null", help=data_help)
    target = publish.add_mutually_exclusive_group()
    target.add_argument("--room", metavar="R", help="publish to room R (publish_to_room)")
    target.add_argument("--user", metavar="U", help="publish to user U (publish_to_user)")
    target.add_argument(
        "--broadcast", action="store_true", help="reach every bus and socket (broadcast)"
    )
    header_help = "a string header such as traceparent=...; repeatable"
    publish.add_argument(
        "--header", metavar="K=V", type=header_pair, action="append", help=header_help
    )

    listen = add_command(
        commands,
        "listen",
        _run_listen,
        "print events as they arrive (live tail)",
        "Print events whose type matches PATTERN as they arrive, one per line, until "
        "Ctrl-C or SIGTERM (exit 0), --count events, or --timeout seconds (exit 1 if "
        "--count events did not arrive by then). Patterns use Redis glob rules: * "
        "matches any run of characters, dots included. A line 'listening ...' on "
        "stderr says when the subscription is live.",
        json_help="one JSON object per line: id, type, source, time, room, user, "
        "broadcast, headers, data (the readable format cuts long data)",
    )
    listen.add_argument(
        "pattern", metavar="PATTERN", nargs="?", default="*", help="default: * (everything)"
    )
    room_help = "also join room R to get its events (of types matching PATTERN); repeatable"
    listen.add_argument("--room", metavar="R", action="append", help=room_help)
    listen.add_argument("--count", metavar="N", type=positive_int, help="exit after N events")
    listen.add_argument("--timeout", metavar="S", type=seconds, help="exit after S seconds")


# -- publish -------------------------------------------------------------------------------


def _read_data(raw: str) -> Any:
    text = sys.stdin.read() if raw == "-" else raw
    try:
        return json.loads(text)
    except ValueError as exc:
        where = "stdin" if raw == "-" else "DATA"
        raise UsageError(f"{where} is not valid JSON: {exc}") from None


def _run_publish(args: argparse.Namespace, config: EventBusConfig) -> int:
    data = _read_data(args.data)
    headers: dict[str, str] = dict(args.header or ())

    def send(bus: EventBus) -> PublishResult:
        options: dict[str, Any] = {"headers": headers or None}
        if args.room is not None:
            return bus.publish_to_room(args.room, args.type, data, **options)
        if args.user is not None:
            return bus.publish_to_user(args.user, args.type, data, **options)
        if args.broadcast:
            return bus.broadcast(args.type, data, **options)
        return bus.publish(args.type, data, **options)

    bus = EventBus(config)
    check_before_connecting(lambda: send(bus))
    note_if_in_process(config)
    with connected(bus):
        result = send(bus)
    if args.json:
        write_line(json.dumps(attrs.asdict(result)), sys.stdout)
    else:
        receivers = "?" if result.receivers is None else str(result.receivers)
        write_line(
            f"published {result.event_type}: id {result.event_id}, {receivers} receiver(s)",
            sys.stdout,
        )
    return EXIT_OK


def _run_listen(args: argparse.Namespace, config: EventBusConfig) -> int:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    bus = EventBus(config)
    # Subscribed before connect(), which returns once the server confirmed it; rooms
    # joined after it, as that also lists us as a member at once: so the ready line
    # below is true. Bad names exit 2 before any I/O either way.
    bus.subscribe(args.pattern, events.put)
    rooms: list[str] = args.room or []
    for room in rooms:
        check_before_connecting(functools.partial(bus.get_room_members, room))
    note_if_in_process(config)
    show: Callable[[Event], str] = (
        (lambda event: json.dumps(event_as_json(event))) if args.json else format_event
    )
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with connected(bus), sigterm_stops_listening():
        seen = listen(
            bus,
            events,
            rooms=rooms,
            count=args.count,
            deadline=deadline,
            announce=lambda also: print_error(
                f"listening for {args.pattern!r}{also} on {config.transport_url} (Ctrl-C to stop)"
            ),
            show=lambda event: write_line(show(event), sys.stdout),
        )
    if seen is None:
        return EXIT_OK
    if args.count is not None and seen < args.count:
        print_error(f"timed out after {args.timeout:g}s with {seen} of {args.count} event(s)")
        return EXIT_FAILURE
    return EXIT_OK
