"""The ``flask eventbus`` commands (``publish``, ``listen``, ``worker``) of
:mod:`eventbus.contrib.flask`; ``init_app`` adds :func:`cli_group` to ``app.cli``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from eventbus import (
    BusStateError,
    Event,
    EventBus,
    EventBusConfig,
    PublishResult,
    TransportError,
    ValidationError,
)

if TYPE_CHECKING:
    pass

# The same event lines and SIGTERM handling as `eventbus listen`.
from eventbus.cli._common import event_as_json, format_event
from eventbus.cli._common import listen as listen_loop
from eventbus.cli._common import sigterm_stops_listening as _stop_on_sigterm
from eventbus.contrib.flask._state import state_of

__all__ = ["cli_group"]

log = logging.getLogger("eventbus.contrib.flask")

_CLI_DISCONNECT_TIMEOUT = 2.0


def cli_group() -> Any:
    """The ``flask eventbus`` click group (click comes with Flask)."""
    import click
    from flask.cli import AppGroup

    class CannotConnect(click.ClickException):
        exit_code = 3

    @contextlib.contextmanager
    def connected(bus: EventBus) -> Iterator[EventBus]:
        try:
            bus.connect()
        except TransportError as exc:
            cause = exc.__cause__ or exc
            raise CannotConnect(f"cannot connect to {bus.config.transport_url}: {cause}") from exc
        try:
            yield bus
        finally:
            bus.disconnect(timeout=_CLI_DISCONNECT_TIMEOUT)

    def note_if_in_process(config: EventBusConfig) -> None:
        if config.transport_url.startswith("memory:"):
            click.echo(
                f"note: {config.transport_url} is this process's own broker; no other process "
                "shares it (set EVENTBUS_URL)",
                err=True,
            )

    def log_to_stderr() -> None:
        """INFO lines of the ``eventbus`` logger on stderr, unless logging routes them."""
        logger = logging.getLogger("eventbus")
        if not logger.hasHandlers():
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)

    group = AppGroup("eventbus", help="Publish and watch the app's events (eventbus).")

    @group.command("publish")
    @click.argument("event_type", metavar="TYPE")
    @click.argument("data", metavar="DATA", default="null")
    @click.option("--room", metavar="R", help="Publish to room R (publish_to_room).")
    @click.option("--user", metavar="U", help="Publish to user U (publish_to_user).")
    @click.option("--broadcast", is_flag=True, help="Reach every bus and socket (broadcast).")
    @click.option("--header", "headers", metavar="K=V", multiple=True, help="A string header.")
    @click.option("--json", "as_json", is_flag=True, help="Print the PublishResult as JSON.")
    def publish(
        event_type: str,
        data: str,
        room: str | None,
        user: str | None,
        broadcast: bool,
        headers: Sequence[str],
        as_json: bool,
    ) -> None:
        """Publish one event of TYPE with DATA (JSON; - reads stdin) on the app's bus."""
        if sum((room is not None, user is not None, broadcast)) > 1:
            raise click.UsageError("--room, --user and --broadcast exclude each other")
        text = sys.stdin.read() if data == "-" else data
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="DATA") from None
        header_map: dict[str, str] = {}
        for item in headers:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise click.BadParameter(f"expected K=V, got {item!r}", param_hint="--header")
            header_map[key] = value

        def send(bus: EventBus) -> PublishResult:
            if room is not None:
                return bus.publish_to_room(room, event_type, payload, headers=header_map)
            if user is not None:
                return bus.publish_to_user(user, event_type, payload, headers=header_map)
            if broadcast:
                return bus.broadcast(event_type, payload, headers=header_map)
            return bus.publish(event_type, payload, headers=header_map)

        state = state_of(None)
        bus = state.new_bus()
        try:
            send(bus)  # checks names, data and size before any I/O
        except ValidationError as exc:
            bus.disconnect(0)
            raise click.UsageError(str(exc)) from None
        except BusStateError:
            pass  # expected: valid, and not connected yet
        note_if_in_process(state.config)
        with connected(bus):
            result = send(bus)
        if as_json:
            click.echo(json.dumps(attrs.asdict(result)))
        else:
            receivers = "?" if result.receivers is None else str(result.receivers)
            click.echo(
                f"published {result.event_type}: id {result.event_id}, {receivers} receiver(s)"
            )

    @group.command("listen")
    @click.argument("patterns", metavar="[PATTERN]...", nargs=-1)
    @click.option("--room", "rooms", metavar="R", multiple=True, help="Also join room R.")
    @click.option("--count", type=click.IntRange(min=1), help="Exit after N events.")
    @click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Exit after S s.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    def listen(
        patterns: Sequence[str],
        rooms: Sequence[str],
        count: int | None,
        timeout: float | None,
        as_json: bool,
    ) -> None:
        """Print events matching PATTERN (default *) until Ctrl-C or SIGTERM.

        Uses a bus of its own with the app's config: the app's handlers do not run.
        Exits 1 if --count events did not arrive within --timeout.
        """
        state = state_of(None)
        chosen = list(patterns) or ["*"]
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        bus = state.new_bus()
        try:
            for pattern in chosen:
                bus.subscribe(pattern, events.put)
        except ValidationError as exc:
            bus.disconnect(0)
            raise click.UsageError(str(exc)) from None
        note_if_in_process(state.config)
        show = (
            (lambda event: json.dumps(event_as_json(event), ensure_ascii=False))
            if as_json
            else format_event
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        with connected(bus), _stop_on_sigterm():
            try:
                seen = listen_loop(
                    bus,
                    events,
                    rooms=rooms,
                    count=count,
                    deadline=deadline,
                    announce=lambda also: click.echo(
                        f"listening for {', '.join(map(repr, chosen))}{also} on "
                        f"{state.config.transport_url} (Ctrl-C to stop)",
                        err=True,
                    ),
                    show=lambda event: click.echo(show(event)),
                )
            except ValidationError as exc:
                raise click.UsageError(str(exc)) from None
        if seen is None:
            return
        if count is not None and seen < count:
            raise click.ClickException(
                f"timed out after {timeout:g}s with {seen} of {count} event(s)"
            )

    @group.command("worker")
    @click.option(
        "--stop-timeout",
        type=float,
        default=None,
        help="Seconds the handlers get to finish on SIGTERM (default: the bus's shutdown_timeout).",
    )
    def worker(stop_timeout: float | None) -> None:
        """Run the extension's handlers until Ctrl-C or SIGTERM, then drain and stop.

        The handlers run on a bus of this command's own (even when EVENTBUS_HANDLERS
        is off for the web processes), inside the app context, under the same runner
        as ``eventbus worker``: a line per handled event, a warm shutdown on the
        first signal, a forced one on the second, exit 1 if handlers were abandoned.
        """
        from eventbus.cli._worker import EXIT_OK, run_worker  # only this command needs it

        state = state_of(None)
        bus = state.new_bus(handlers=True)
        note_if_in_process(state.config)
        log_to_stderr()

        def ready() -> None:
            subs = bus.subscriptions()
            click.echo(
                f"worker {bus.client_id}: {len(subs)} handler(s) on "
                f"{state.config.transport_url} (Ctrl-C to stop)",
                err=True,
            )
            for sub in subs:
                name = getattr(sub.handler, "__qualname__", repr(sub.handler))
                click.echo(f"  {sub.pattern!r} -> {name}", err=True)

        try:
            code = run_worker(
                bus, name=f"flask:{bus.service_name}", stop_timeout=stop_timeout, on_ready=ready
            )
        except TransportError as exc:
            cause = exc.__cause__ or exc
            raise CannotConnect(f"cannot connect to {bus.config.transport_url}: {cause}") from exc
        if code != EXIT_OK:
            # A handler still running would hold the interpreter at exit (Python joins
            # the pool's threads): leave now, as the stop timeout promised.
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(code)

    return group
