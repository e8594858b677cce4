"""The ``eventbus`` command: publish, listen, members, health, stats, groups, dlq, worker, demo.

Run ``eventbus --help`` (or ``python -m eventbus --help``). Global options go before
the command::

    eventbus --url redis://localhost:6379/0 listen 'photo.*'
    eventbus publish photo.uploaded '{"photoId": "123"}'
    eventbus --url redis://localhost:6379/0 stats
    eventbus --url redis://localhost:6379/0 dlq list thumbnailer
    eventbus worker myapp.events:bus

Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 cannot connect (``health``
also exits 1 when degraded and 2 when unhealthy).

Built only on the public API of :mod:`eventbus`, like any application would be. The
durable-group commands (``groups``, ``dlq``) live in :mod:`eventbus.cli._groups`;
``worker`` runs :func:`eventbus.cli._worker.run_worker`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
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

import attrs

from eventbus import (
    BusStateError,
    ConfigurationError,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    PublishResult,
    TransportError,
    ValidationError,
    __version__,
)

__all__ = [
    "EXIT_CANNOT_CONNECT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0  # it did what it was asked
EXIT_FAILURE = 1  # it ran and failed: the demo missed events, `health` is degraded...
EXIT_USAGE = 2  # bad arguments or input (an option, JSON, a name); nothing was sent
EXIT_CANNOT_CONNECT = 3  # the transport could not be reached

_HEALTH_EXIT = {"healthy": EXIT_OK, "degraded": 1, "unhealthy": 2}
_DISCONNECT_TIMEOUT = 2.0
_MAX_DATA_CHARS = 400  # of the readable `listen` format; --json prints everything
_MAX_LIST_CHARS = 40  # of the subscriptions and rooms columns of `stats`

_DESCRIPTION = """\
Publish, watch and inspect events of an eventbus deployment.

The transport comes from --url, else from the environment as EventBus.from_env()
reads it (EVENTBUS_URL, else REDIS_HOST / REDIS_PORT / REDIS_USERNAME /
REDIS_PASSWORD / REDIS_DB / EVENTBUS_KEY_PREFIX), else memory://, the in-process
broker, which only the `demo` can use to any effect: no other process shares it.
"""

_EPILOG = """\
exit codes: 0 ok; 1 failure; 2 usage error or bad input (nothing was sent);
3 cannot connect. `health` exits 0 healthy, 1 degraded, 2 unhealthy.
"""


class _CannotConnectError(Exception):
    """The bus's transport could not be reached; the message names the masked URL."""


class _UsageError(Exception):
    """Bad input the parser could not catch (e.g. DATA that is not JSON)."""


class _StopListening(Exception):
    """Raised by the SIGTERM handler of ``listen`` to leave its loop."""


# -- argument types ------------------------------------------------------------------------


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def _bounded(kind: Callable[[str], float], low: float, *, strict: bool) -> Callable[[str], Any]:
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


_positive_int = _bounded(int, 1, strict=False)
_seconds = _bounded(float, 0, strict=True)
_speed = _bounded(float, 0, strict=False)


# -- the parser ----------------------------------------------------------------------------


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Callable[[argparse.Namespace, EventBusConfig], int],
    summary: str,
    description: str,
    *,
    json_help: str | None = None,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=description, epilog=_EPILOG)
    parser.set_defaults(run=run)
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eventbus`` command (for docs and completion tools)."""
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        metavar="URL",
        help="memory://[NAME], redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?key_prefix=P], "
        "rediss://..., unix://... (default: from the environment, else memory://)",
    )
    name_help = "this command's bus's service name, the source of what it publishes"
    parser.add_argument("--service-name", default="eventbus-cli", metavar="NAME", help=name_help)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log to stderr at DEBUG (default: WARNING)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    publish = _command(
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
    publish.add_argument("--header", metavar="K=V", type=_header, action="append", help=header_help)

    listen = _command(
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
    listen.add_argument("--count", metavar="N", type=_positive_int, help="exit after N events")
    listen.add_argument("--timeout", metavar="S", type=_seconds, help="exit after S seconds")

    members = _command(
        commands,
        "members",
        _run_members,
        "list the members of a room",
        "Print the members of ROOM across every process, one per line: bus client ids "
        "and gateway socket user ids.",
        json_help="print a JSON list",
    )
    members.add_argument("room", metavar="ROOM")

    _command(
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
    _command(
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
    from eventbus.cli._groups import add_group_commands  # built on this module's helpers

    add_group_commands(commands)
    _add_worker_command(commands)
    from eventbus.cli._gateway import add_gateway_commands  # imports the gateway lazily

    add_gateway_commands(commands)
    demo = _command(
        commands,
        "demo",
        _run_demo,
        "run the photo pipeline of the Node README, end to end",
        "Run the photo pipeline (photo-api, photo-worker, notification-service, a "
        "browser in room user:user-456, an audit subscriber on *.processing.*) as buses "
        "in this process, printing each step, then a summary. Uses a fresh memory:// "
        "broker unless --url or the environment names another transport (Redis gets a "
        "key prefix unique to the run). Exits 1 if an expected event did not arrive.",
    )
    demo.add_argument(
        "--speed",
        metavar="F",
        type=_speed,
        default=1.0,
        help="multiplies the simulated work time: 0.1 runs ten times faster, 0 skips it "
        "(default: %(default)s)",
    )
    return parser


# -- main ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eventbus`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit code (see the module docstring); never raises for bad input or
    an unreachable server.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    with _logging_to_stderr(verbose=args.verbose):
        run: Callable[[argparse.Namespace, EventBusConfig], int] = args.run
        try:
            return run(args, _config(args))
        except _CannotConnectError as exc:
            _error(str(exc))
            return EXIT_CANNOT_CONNECT
        except (_UsageError, ConfigurationError, ValidationError) as exc:
            _error(f"error: {exc}")
            return EXIT_USAGE
        except EventBusError as exc:
            _error(f"{type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except BrokenPipeError:  # e.g. `eventbus listen | head -1`: the reader is done
            _silence_stdout()
            return EXIT_OK


def _config(args: argparse.Namespace) -> EventBusConfig:
    """The CLI bus's config: --url, else the environment; logging stays ours (-v)."""
    if args.url is not None:
        return EventBusConfig.from_url(args.url, service_name=args.service_name)
    return EventBusConfig.from_env(service_name=args.service_name, log_level=None)


@contextlib.contextmanager
def _logging_to_stderr(*, verbose: bool) -> Iterator[None]:
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


def _error(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"eventbus: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _note_if_in_process(config: EventBusConfig) -> None:
    if config.transport_url.startswith("memory:"):
        _error(
            f"note: {config.transport_url} is this process's own broker; no other process "
            "shares it (give --url or set EVENTBUS_URL)"
        )


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the exit flush cannot fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stdout = sys.__stdout__
        if stdout is not None and sys.stdout is stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())


@contextlib.contextmanager
def _connected(bus: EventBus) -> Iterator[EventBus]:
    """Connect ``bus`` (a failure becomes :class:`_CannotConnectError`); disconnect on exit."""
    try:
        bus.connect()
    except TransportError as exc:
        raise _cannot_connect(bus.config, exc) from exc
    try:
        yield bus
    finally:
        bus.disconnect(timeout=_DISCONNECT_TIMEOUT)


def _cannot_connect(config: EventBusConfig, exc: TransportError) -> _CannotConnectError:
    # transport_url masks the password; the cause is redis-py's own one-liner
    return _CannotConnectError(f"cannot connect to {config.transport_url}: {exc.__cause__ or exc}")


def _check_before_connecting(call: Callable[[], object]) -> None:
    """Validate a call's arguments without any I/O: run it on a bus not yet connected.

    The bus checks names, data and size first (raising :class:`ValidationError`) and
    only then refuses with :class:`BusStateError`, which is expected here. So bad input
    exits 2 even when the server is unreachable, and nothing is ever sent.
    """
    with contextlib.suppress(BusStateError):
        call()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _write(line: str, out: TextIO) -> None:
    """Print one line and flush it (so pipes see it at once), whatever the encoding."""
    try:
        print(line, file=out, flush=True)
    except UnicodeEncodeError:
        print(line.encode("ascii", "backslashreplace").decode("ascii"), file=out, flush=True)


# -- publish -------------------------------------------------------------------------------


def _read_data(raw: str) -> Any:
    text = sys.stdin.read() if raw == "-" else raw
    try:
        return json.loads(text)
    except ValueError as exc:
        where = "stdin" if raw == "-" else "DATA"
        raise _UsageError(f"{where} is not valid JSON: {exc}") from None


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
    _check_before_connecting(lambda: send(bus))
    _note_if_in_process(config)
    with _connected(bus):
        result = send(bus)
    if args.json:
        _write(json.dumps(attrs.asdict(result)), sys.stdout)
    else:
        receivers = "?" if result.receivers is None else str(result.receivers)
        _write(
            f"published {result.event_type}: id {result.event_id}, {receivers} receiver(s)",
            sys.stdout,
        )
    return EXIT_OK


# -- listen --------------------------------------------------------------------------------


def _event_as_json(event: Event) -> dict[str, Any]:
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


def _format_event(event: Event) -> str:
    """One readable line: local time, type, source, room (or broadcast), compact data.

    Example: ``14:03:07.218  photo.uploaded              photo-api  {"photoId":"123"}``
    """
    when = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
    where = f"  room={event.room}" if event.room else "  broadcast" if event.broadcast else ""
    data = _dumps(event.data)
    if len(data) > _MAX_DATA_CHARS:
        data = data[: _MAX_DATA_CHARS - 3] + "..."
    return f"{when}  {event.type:<26}  {event.source}{where}  {data}"


@contextlib.contextmanager
def _sigterm_stops_listening() -> Iterator[None]:
    """Turn SIGTERM into :class:`_StopListening` (main thread only; restored on exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise _StopListening

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_listen(args: argparse.Namespace, config: EventBusConfig) -> int:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    bus = EventBus(config)
    # Subscribed before connect(), which returns once the server confirmed it; rooms
    # joined after it, as that also lists us as a member at once: so the ready line
    # below is true. Bad names exit 2 before any I/O either way.
    bus.subscribe(args.pattern, events.put)
    rooms: list[str] = args.room or []
    for room in rooms:
        _check_before_connecting(functools.partial(bus.get_room_members, room))
    _note_if_in_process(config)
    show: Callable[[Event], str] = (
        (lambda event: json.dumps(_event_as_json(event))) if args.json else _format_event
    )
    seen = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _connected(bus), _sigterm_stops_listening():
        try:
            for room in rooms:
                bus.join_room(room)
            also = f" and rooms {', '.join(rooms)}" if rooms else ""
            _error(
                f"listening for {args.pattern!r}{also} on {config.transport_url} (Ctrl-C to stop)"
            )
            while args.count is None or seen < args.count:
                wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if wait <= 0:
                    break
                try:
                    event = events.get(timeout=wait)
                except queue.Empty:
                    continue
                _write(show(event), sys.stdout)
                seen += 1
        except (KeyboardInterrupt, _StopListening):
            return EXIT_OK
    if args.count is not None and seen < args.count:
        _error(f"timed out after {args.timeout:g}s with {seen} of {args.count} event(s)")
        return EXIT_FAILURE
    return EXIT_OK


# -- members, health, stats, demo ----------------------------------------------------------


def _run_members(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = EventBus(config)
    _check_before_connecting(lambda: bus.get_room_members(args.room))
    _note_if_in_process(config)
    with _connected(bus):
        members = bus.get_room_members(args.room)
    if args.json:
        _write(json.dumps(members), sys.stdout)
    else:
        for member in members:
            _write(member, sys.stdout)
    return EXIT_OK


def _run_health(args: argparse.Namespace, config: EventBusConfig) -> int:
    with _connected(EventBus(config)) as bus:
        result = bus.health_check()
    if args.json:
        doc = attrs.asdict(result)
        _write(json.dumps(doc), sys.stdout)
    else:
        out = sys.stdout
        _write(f"status:     {result.status}", out)
        _write(f"uptime:     {result.uptime:.3f} s", out)
        _write(f"transport:  {result.transport}", out)
        _write(f"client id:  {result.client_id}", out)
        _write("checks:", out)
        width = max((len(name) for name in result.checks), default=0)
        for name, check in result.checks.items():
            _write(f"  {name:<{width}}  {check.status:<9}  {check.detail}", out)
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


def _format_table(rows: Sequence[Sequence[str]], text_columns: int) -> list[str]:
    """Align ``rows`` (the first is the header): text columns left, the others right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _run_stats(args: argparse.Namespace, config: EventBusConfig) -> int:
    bus = EventBus(config)
    _note_if_in_process(config)
    with _connected(bus):
        clients = [c for c in bus.get_clients() if c.client_id != bus.client_id]
    clients.sort(key=lambda c: (c.service_name, c.client_id))
    if args.json:
        _write(json.dumps([attrs.asdict(c) for c in clients]), sys.stdout)
    elif not clients:
        _error(f"no other bus is live on {config.transport_url}")
    else:
        header = ["SERVICE", "CLIENT ID", "HOST/PID", "SUBSCRIPTIONS", "ROOMS"]
        rows = [[*header, *(title for title, _, _ in _STATS_COLUMNS)]]
        for c in clients:
            counters = [_number(c.stats.get(key), digits) for _, key, digits in _STATS_COLUMNS]
            names = [_names(c.subscriptions), _names(c.rooms)]
            rows.append([c.service_name, c.client_id, f"{c.host}/{c.pid}", *names, *counters])
        for line in _format_table(rows, text_columns=len(header)):
            _write(line, sys.stdout)
    return EXIT_OK


def _run_demo(args: argparse.Namespace, config: EventBusConfig) -> int:
    from eventbus.cli._demo import run_demo  # only this command needs it

    try:
        ok = run_demo(config, speed=args.speed, out=sys.stdout)
    except TransportError as exc:  # run_demo lets only connect failures through
        raise _cannot_connect(config, exc) from exc
    return EXIT_OK if ok else EXIT_FAILURE


# -- worker --------------------------------------------------------------------------------

_WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _add_worker_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    worker = _command(
        commands,
        "worker",
        _run_worker,
        "run the handlers a module registers, until SIGTERM or Ctrl-C",
        "Import MODULE (the current directory is on the path, as with `celery -A`), take "
        "its EventBus (the attribute BUS, default: `bus`, else the only EventBus in the "
        "module), connect it and run its handlers, logging one line per event. SIGTERM "
        "or Ctrl-C shuts down gracefully: no new events are taken, running and queued "
        "handlers finish (durable-group entries are acknowledged) within --stop-timeout; "
        "a second signal forces the exit. The bus keeps the configuration the module "
        "gave it: the global --url does not apply. Exits 0 after a clean stop, 1 if "
        "handlers were abandoned, 2 for a bad MODULE[:BUS], 3 if it cannot connect.",
    )
    worker.add_argument(
        "target", metavar="MODULE[:BUS]", help="e.g. myapp.events or myapp.events:bus"
    )
    worker.add_argument(
        "--stop-timeout",
        metavar="S",
        type=_bounded(float, 0, strict=False),
        help="seconds a shutdown waits for handlers (default: the bus's shutdown_timeout)",
    )
    worker.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=_LOG_LEVELS,
        default="INFO",
        help="DEBUG, INFO (default: one line per event), WARNING or ERROR; -v means DEBUG",
    )


def _import_target(target: str) -> tuple[str, EventBus]:
    """Import MODULE[:BUS] with the current directory on ``sys.path``; find its bus."""
    module_name, _, attribute = target.partition(":")
    if not module_name or (":" in target and not attribute):
        raise _UsageError(f"expected MODULE or MODULE:BUS, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise _UsageError(
                f"cannot import {module_name!r}: no module named {missing!r}"
            ) from None
        raise  # the module exists and failed: its traceback says why
    if attribute:
        found: Any = module
        for part in attribute.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise _UsageError(
                    f"module {module_name!r} has no attribute {attribute!r}"
                ) from None
        if not isinstance(found, EventBus):
            raise _UsageError(
                f"{module_name}:{attribute} is a {type(found).__name__}, not an EventBus"
            )
        return f"{module_name}:{attribute}", found
    default = getattr(module, "bus", None)
    if isinstance(default, EventBus):
        return f"{module_name}:bus", default
    buses: dict[int, tuple[str, EventBus]] = {}
    for name, value in vars(module).items():
        if isinstance(value, EventBus):
            buses.setdefault(id(value), (name, value))
    if len(buses) == 1:
        name, bus = next(iter(buses.values()))
        return f"{module_name}:{name}", bus
    if not buses:
        raise _UsageError(
            f"no EventBus found in module {module_name!r}: "
            "name it with MODULE:BUS, or call it `bus`"
        )
    names = ", ".join(sorted(name for name, _ in buses.values()))
    raise _UsageError(
        f"module {module_name!r} has several EventBus objects ({names}): name one with MODULE:BUS"
    )


@contextlib.contextmanager
def _worker_logging(level: str) -> Iterator[None]:
    """Timestamped logs at ``level`` on stderr for the worker: the ``eventbus`` logger
    (already sent to stderr by :func:`_logging_to_stderr`) and, if nothing else
    configured logging, the root logger too, so the handlers' own logs show."""
    eventbus_logger = logging.getLogger("eventbus")
    root = logging.getLogger()
    formatter = logging.Formatter(_WORKER_LOG_FORMAT)
    saved_formatters = [(h, h.formatter) for h in eventbus_logger.handlers]
    saved_level = eventbus_logger.level
    for handler in eventbus_logger.handlers:
        handler.setFormatter(formatter)
    eventbus_logger.setLevel(level)
    root_handler: logging.Handler | None = None
    saved_root_level = root.level
    if not root.handlers:
        root_handler = logging.StreamHandler(sys.stderr)
        root_handler.setFormatter(formatter)
        root.addHandler(root_handler)
        root.setLevel(level)
    try:
        yield
    finally:
        if root_handler is not None:
            root.removeHandler(root_handler)
            root.setLevel(saved_root_level)
        eventbus_logger.setLevel(saved_level)
        for handler, saved in saved_formatters:
            handler.setFormatter(saved)


def _run_worker(args: argparse.Namespace, config: EventBusConfig) -> int:
    from eventbus.cli._worker import EXIT_OK as WORKER_OK  # only this command needs it
    from eventbus.cli._worker import run_worker

    if args.url is not None:
        raise _UsageError(
            "--url does not apply to `worker`: the module's bus keeps its own configuration "
            "(set it in the module, e.g. EventBus.from_env())"
        )
    name, bus = _import_target(args.target)
    level = "DEBUG" if args.verbose else args.log_level
    with _worker_logging(level):
        _note_if_in_process(bus.config)
        try:
            code = run_worker(bus, name=name, stop_timeout=args.stop_timeout)
        except TransportError as exc:
            raise _cannot_connect(bus.config, exc) from exc
    if code != WORKER_OK:
        # A handler still running would hold the interpreter at exit (Python joins the
        # pool's threads): leave now, as the shutdown's deadline promised.
        _flush_stdio()
        os._exit(code)
    return code


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
