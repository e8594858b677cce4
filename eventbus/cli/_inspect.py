"""``eventbus members``, ``health`` and ``stats``: what is live on the server."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import attrs

from eventbus import (
    EventBus,
    EventBusConfig,
)
from eventbus.cli._common import (
    EXIT_OK,
    add_command,
    check_before_connecting,
    connected,
    format_table,
    note_if_in_process,
    print_error,
    write_line,
)

_HEALTH_EXIT = {"healthy": EXIT_OK, "degraded": 1, "unhealthy": 2}
_MAX_LIST_CHARS = 40  # of the subscriptions and rooms columns of `stats`


def add_inspect_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``members``, ``health`` and ``stats`` to the ``eventbus`` command."""
    members = add_command(
        commands,
        "members",
        _run_members,
        "list the members of a room",
        "Print the members of ROOM across every process, one per line: bus client ids "
        "and gateway socket user ids.",
        json_help="print a JSON list",
    )
    members.add_argument("room", metavar="ROOM")

    add_command(
        commands,
        "health",
        _run_health,
        "check the connection to the transport",
        "Connect, run EventBus.health_check() and print the status, uptime and each "
        "check. It checks this command's own connection (the server answers, the "
        "listener runs); for the counters of running services see `stats`. Exits 0 "
        "healthy, 1 degraded, 2 unhealthy.",
        json_help="print the result as JSON",
    )
    add_command(
        commands,
        "stats",
        _run_stats,
        "list every live bus on the server, with its counters",
        "List every live bus on this server (EventBus.get_clients()): its service, "
        "client id, host/pid, subscriptions, rooms and counters. Each bus refreshes its "
        "record every heartbeat_interval (5 s by default), so the counters are up to "
        "that old. This command's own bus is left out.",
        json_help="print the raw list as JSON",
    )


def _run_members(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = EventBus(config)
    check_before_connecting(lambda: bus.get_room_members(args.room))
    note_if_in_process(config)
    with connected(bus):
        members = bus.get_room_members(args.room)
    if args.json:
        write_line(json.dumps(members), sys.stdout)
    else:
        for member in members:
            write_line(member, sys.stdout)
    return EXIT_OK


def _run_health(args: argparse.Namespace, config: EventBusConfig) -> int:
    with connected(EventBus(config)) as bus:
        result = bus.health_check()
    if args.json:
        doc = attrs.asdict(result)
        write_line(json.dumps(doc), sys.stdout)
    else:
        out = sys.stdout
        write_line(f"status:     {result.status}", out)
        write_line(f"uptime:     {result.uptime:.3f} s", out)
        write_line(f"transport:  {result.transport}", out)
        write_line(f"client id:  {result.client_id}", out)
        write_line("checks:", out)
        width = max((len(name) for name in result.checks), default=0)
        for name, check in result.checks.items():
            write_line(f"  {name:<{width}}  {check.status:<9}  {check.detail}", out)
    return _HEALTH_EXIT[result.status]


# (title, ClientInfo.stats key, decimals) of the counter columns of `stats`
_STATS_COLUMNS = (
    ("PUB", "events_published", 0),
    ("RECV", "events_received", 0),
    ("HANDLED", "events_handled", 0),
    ("FAILED", "events_failed", 0),
    ("DROPPED", "events_dropped", 0),
    ("RECONN", "reconnects", 0),
    ("GAPS", "gaps_detected", 0),
    ("P50 MS", "handler_p50_ms", 2),
    ("P99 MS", "handler_p99_ms", 2),
)


def _number(value: object, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f}"


def _names(values: Sequence[str]) -> str:
    text = ",".join(values) or "-"
    return text if len(text) <= _MAX_LIST_CHARS else text[: _MAX_LIST_CHARS - 3] + "..."


def _run_stats(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = EventBus(config)
    note_if_in_process(config)
    with connected(bus):
        clients = [c for c in bus.get_clients() if c.client_id != bus.client_id]
    clients.sort(key=lambda c: (c.service_name, c.client_id))
    if args.json:
        write_line(json.dumps([attrs.asdict(c) for c in clients]), sys.stdout)
    elif not clients:
        print_error(f"no other bus is live on {config.transport_url}")
    else:
        header = ["SERVICE", "CLIENT ID", "HOST/PID", "SUBSCRIPTIONS", "ROOMS"]
        rows = [[*header, *(title for title, _, _ in _STATS_COLUMNS)]]
        for c in clients:
            counters = [_number(c.stats.get(key), digits) for _, key, digits in _STATS_COLUMNS]
            names = [_names(c.subscriptions), _names(c.rooms)]
            rows.append([c.service_name, c.client_id, f"{c.host}/{c.pid}", *names, *counters])
        for line in format_table(rows, text_columns=len(header)):
            write_line(line, sys.stdout)
    return EXIT_OK
