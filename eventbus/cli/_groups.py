"""The durable-group commands of ``eventbus``: ``groups`` and ``dlq list|replay|purge``.

Part of :mod:`eventbus.cli` (which adds them to its parser), kept apart for size. Built
only on the public API of :mod:`eventbus` and the helpers of :mod:`eventbus.cli`::

    eventbus --url redis://localhost:6379/0 groups
    eventbus --url redis://localhost:6379/0 dlq list thumbnailer
    eventbus --url redis://localhost:6379/0 dlq replay thumbnailer
    eventbus --url redis://localhost:6379/0 dlq purge thumbnailer --yes
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

import attrs

from eventbus import EventBus, EventBusConfig
from eventbus.cli._common import (
    EPILOG,
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    add_command,
    check_before_connecting,
    connected,
    format_table,
    note_if_in_process,
    positive_int,
    print_error,
    write_line,
)

__all__ = ["add_group_commands"]

_MAX_ERROR_CHARS = 80  # of the ERROR column of `dlq list`; --json prints everything
_STREAM_ID = re.compile(r"[0-9]+(-[0-9]+)?")


def _stream_id(text: str) -> str:
    if not _STREAM_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"expected a stream entry id like 1732812345678-0, got {text!r}"
        )
    return text


def add_group_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``groups`` and ``dlq`` (with ``list``, ``replay``, ``purge``) to ``commands``."""
    add_command(
        commands,
        "groups",
        _run_groups,
        "list the durable groups, with backlog, pending and dead letters",
        "List every durable group registered on the server (EventBus.get_groups()): its "
        "pattern, consumers, backlog (entries not yet delivered to the group; ? when the "
        "server cannot tell), pending (delivered, not yet acknowledged), the age of the "
        "oldest pending entry, the stream's length and the dead letters.",
        json_help="print a JSON list: name, pattern and the GroupInfo fields",
    )
    dlq = commands.add_parser(
        "dlq",
        help="list, replay or purge a group's dead letters",
        description="Inspect and handle the dead-letter stream of a durable group: the "
        "events whose handler failed max_deliveries times. GROUP must be registered "
        "(`eventbus groups` lists them; another name exits 1); an invalid name exits 2 "
        "before connecting.",
        epilog=EPILOG,
    )
    actions = dlq.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = add_command(
        actions,
        "list",
        _run_dlq_list,
        "print a group's dead letters, oldest first",
        "Print the oldest --count dead letters of GROUP: the dead letter's id, the entry "
        "id it had in the group stream, the event's type and id (? when its envelope "
        "does not decode), how many times it was delivered, the consumer that gave it "
        "up, and the last error (cut at 80 characters).",
        json_help="print a JSON list, each with the whole error and the event's envelope",
    )
    listing.add_argument("group", metavar="GROUP")
    listing.add_argument(
        "--count",
        metavar="N",
        type=positive_int,
        default=100,
        help="at most N dead letters (default: %(default)s)",
    )

    replay = add_command(
        actions,
        "replay",
        _run_dlq_replay,
        "put dead letters back into the group's stream",
        "Put the dead letters of GROUP (all of them, or those whose ids are given) back "
        "into its stream as new entries, to be delivered again to its consumers, and "
        "print how many. An id that is not a dead letter of GROUP is skipped.",
    )
    replay.add_argument("group", metavar="GROUP")
    id_help = "a dead letter's id, as `dlq list` prints it (default: every dead letter)"
    replay.add_argument("ids", metavar="ID", nargs="*", type=_stream_id, help=id_help)

    purge = add_command(
        actions,
        "purge",
        _run_dlq_purge,
        "delete a group's dead letters",
        "Delete every dead letter of GROUP and print how many there were. Without "
        "--yes it asks first, which needs a terminal: with stdin not a TTY it refuses "
        "(exit 2).",
    )
    purge.add_argument("group", metavar="GROUP")
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")


# -- groups --------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    """A short age: ``0.4s``, ``12.0s``, ``3m07s``, ``2h05m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _run_groups(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = EventBus(config)
    note_if_in_process(config)
    with connected(bus):
        patterns = bus.get_group_patterns()
        groups = bus.get_groups()
    if args.json:
        rows = [
            {"name": name, "pattern": patterns.get(name), **attrs.asdict(info)}
            for name, info in sorted(groups.items())
        ]
        write_line(json.dumps(rows), sys.stdout)
    elif not groups:
        print_error(f"no durable group is registered on {config.transport_url}")
    else:
        header = ["GROUP", "PATTERN"]
        numbers = ["CONSUMERS", "BACKLOG", "PENDING", "OLDEST PENDING", "LENGTH", "DEAD"]
        rows_text = [[*header, *numbers]]
        for name, info in sorted(groups.items()):
            rows_text.append(
                [
                    name,
                    patterns.get(name, "?"),
                    str(info.consumers),
                    "?" if info.lag is None else str(info.lag),
                    str(info.pending),
                    _age(info.oldest_pending_age),
                    str(info.length),
                    str(info.dead_letters),
                ]
            )
        for line in format_table(rows_text, text_columns=len(header)):
            write_line(line, sys.stdout)
    return EXIT_OK


# -- dlq -----------------------------------------------------------------------------------


def _prepare(group: str, config: EventBusConfig) -> EventBus:
    """A bus for a ``dlq`` command, once ``group`` is known valid (else exit 2, no I/O)."""
    bus = EventBus(config)
    check_before_connecting(lambda: bus.dead_letters(group))
    note_if_in_process(config)
    return bus


def _registered(bus: EventBus, group: str, config: EventBusConfig) -> bool:
    """True if ``group`` is registered; else say so on stderr."""
    if group in bus.get_group_patterns():
        return True
    print_error(
        f"error: no group {group!r} is registered on {config.transport_url} "
        "(`eventbus groups` lists them)"
    )
    return False


def _envelope(payload: bytes) -> dict[str, Any] | None:
    """The event's JSON envelope, or None if ``payload`` is not a JSON object."""
    try:
        envelope = json.loads(payload)
    except ValueError:  # not UTF-8 (UnicodeDecodeError) or not JSON
        return None
    return envelope if isinstance(envelope, dict) else None


def _field(envelope: dict[str, Any] | None, key: str) -> str:
    value = None if envelope is None else envelope.get(key)
    return value if isinstance(value, str) else "?"


def _run_dlq_list(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = _prepare(args.group, config)
    with connected(bus):
        if not _registered(bus, args.group, config):
            return EXIT_FAILURE
        letters = bus.dead_letters(args.group, args.count + 1)  # one more: are there more?
    more = len(letters) > args.count
    letters = letters[: args.count]
    if args.json:
        rows = []
        for letter in letters:
            envelope = _envelope(letter.payload)
            row: dict[str, Any] = {
                "id": letter.id,
                "source_id": letter.source_id,
                "type": _field(envelope, "type"),
                "event_id": _field(envelope, "id"),
                "deliveries": letter.deliveries,
                "consumer": letter.consumer,
                "error": letter.error,
                "envelope": envelope,
            }
            if envelope is None:
                row["payload"] = letter.payload.decode(errors="replace")
            rows.append(row)
        write_line(json.dumps(rows, ensure_ascii=False), sys.stdout)
    elif not letters:
        print_error(f"group {args.group!r} has no dead letters")
    else:
        header = ["ID", "SOURCE ID", "TYPE", "EVENT ID", "DELIVERIES", "CONSUMER", "ERROR"]
        table = [header]
        for letter in letters:
            envelope = _envelope(letter.payload)
            error = " ".join(letter.error.split())
            if len(error) > _MAX_ERROR_CHARS:
                error = error[: _MAX_ERROR_CHARS - 3] + "..."
            table.append(
                [
                    letter.id,
                    letter.source_id,
                    _field(envelope, "type"),
                    _field(envelope, "id"),
                    str(letter.deliveries),
                    letter.consumer,
                    error,
                ]
            )
        for line in format_table(table, text_columns=len(header)):
            write_line(line, sys.stdout)
    if more:
        print_error(f"showing the oldest {args.count}; there are more (--count N shows up to N)")
    return EXIT_OK


def _run_dlq_replay(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = _prepare(args.group, config)
    ids: list[str] = args.ids
    with connected(bus):
        if not _registered(bus, args.group, config):
            return EXIT_FAILURE
        moved = bus.replay_dead_letters(args.group, ids or None)
    if ids:
        skipped = f" ({len(ids) - moved} not found)" if moved < len(ids) else ""
        what = f"{moved} of {len(ids)} dead letter(s){skipped}"
    else:
        what = f"{moved} dead letter(s)"
    write_line(f"replayed {what} into group {args.group}", sys.stdout)
    return EXIT_OK


def _confirmed(question: str) -> bool:
    """Ask ``question`` on stderr and read a y/yes answer from stdin (EOF is no)."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _run_dlq_purge(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = _prepare(args.group, config)
    if not args.yes and not sys.stdin.isatty():
        raise UsageError(
            "purge asks for confirmation and stdin is not a terminal: pass --yes to purge "
            "without asking"
        )
    with connected(bus):
        if not _registered(bus, args.group, config):
            return EXIT_FAILURE
        if not args.yes:
            info = bus.get_groups().get(args.group)
            count = "?" if info is None else str(info.dead_letters)
            question = (
                f"delete the {count} dead letter(s) of group {args.group} "
                f"on {config.transport_url}?"
            )
            if count != "0" and not _confirmed(question):
                print_error("nothing was purged")
                return EXIT_FAILURE
        purged = bus.purge_dead_letters(args.group)
    write_line(f"purged {purged} dead letter(s) of group {args.group}", sys.stdout)
    return EXIT_OK
