"""Run a bus's handlers as a long-lived process: ``eventbus worker``, Django's command.

:class:`Worker` connects a bus whose handlers are already subscribed, logs what it
runs, blocks until SIGTERM / SIGINT (or :meth:`Worker.stop`), then shuts down
gracefully: it stops taking new events, lets running and queued handlers finish
(durable-group entries are acknowledged), disconnects, and returns an exit code.
A second signal during that shutdown forces the process out at once, as Celery's
warm / cold shutdown does. :func:`run_worker` is the one-call form::

    import sys
    from eventbus._worker import run_worker
    from myapp.events import bus  # a module that registered @bus.on handlers

    sys.exit(run_worker(bus, name="myapp"))

Built only on the public API of :mod:`eventbus` (like :mod:`eventbus.cli`). The
per-event log lines come from the ``eventbus.events`` logger, which the dispatcher
feeds one DEBUG record per finished event; while a worker runs it listens there
and re-logs each record of its own bus as a readable INFO line on ``eventbus.worker``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from eventbus import BusStateError, EventBus, EventBusStats

__all__ = ["EXIT_OK", "EXIT_UNFINISHED", "Worker", "run_worker"]

EXIT_OK = 0  # stopped with every handler finished
EXIT_UNFINISHED = 1  # handlers were abandoned or queued events dropped (or a forced stop)

log = logging.getLogger("eventbus.worker")

_POLL = 0.1  # how often the waiting main thread looks at its flags
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Worker:
    """Run ``bus``'s subscribed handlers until told to stop, then shut down gracefully.

    Example::

        worker = Worker(bus, name="thumbnailer", stop_timeout=30)
        code = worker.run()  # blocks; worker.stop() from another thread ends it

    Args:
        bus: a bus with its handlers subscribed (``@bus.on``); connected by
            :meth:`run` if it is not yet, and always disconnected when :meth:`run`
            ends (the worker owns the bus from then on).
        name: how the log names this worker (e.g. ``myapp.events:bus``).
        stop_timeout: seconds the shutdown waits for running and queued handlers
            (default: the bus's ``config.shutdown_timeout``).
        install_signals: handle SIGTERM and SIGINT while :meth:`run` runs (only
            possible in the main thread; the previous handlers come back after).
        on_ready: called once the bus is connected and the startup summary logged.
        log_events: log one INFO line per event handled, retried or failed.
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        name: str,
        stop_timeout: float | None = None,
        install_signals: bool = True,
        on_ready: Callable[[], None] | None = None,
        log_events: bool = True,
    ) -> None:
        if not isinstance(bus, EventBus):
            raise TypeError(f"bus must be an EventBus, got {type(bus).__name__}")
        if stop_timeout is not None and not stop_timeout >= 0:
            raise ValueError(f"stop_timeout must be >= 0 seconds, got {stop_timeout!r}")
        self._bus = bus
        self._name = name
        self._stop_timeout = (
            bus.config.shutdown_timeout if stop_timeout is None else float(stop_timeout)
        )
        self._install_signals = install_signals
        self._on_ready = on_ready
        self._log_events = log_events
        # Plain flags, not threading.Event: a signal handler runs in the main thread
        # between two bytecodes, possibly while that thread holds an Event's lock
        # inside Event.wait(), and Event.set() there would deadlock.
        self._stop_requested = False
        self._force_requested = False
        self._forced_by_signal = False
        self._reason = "stop() was called"
        self._running = False
        self._lock = threading.Lock()

    @property
    def bus(self) -> EventBus:
        """The bus this worker runs."""
        return self._bus

    @property
    def name(self) -> str:
        """The worker's name in the log."""
        return self._name

    def stop(self, *, force: bool = False) -> None:
        """Ask :meth:`run` to shut down; safe from any thread, also before it runs.

        The first call starts the graceful shutdown. ``force=True`` (or a stop while
        the shutdown already runs, as a second signal does) makes :meth:`run` stop
        waiting for handlers and return :data:`EXIT_UNFINISHED` at once.
        """
        if force:
            self._force_requested = True
        self._stop_requested = True

    def run(self) -> int:
        """Connect, run handlers until stopped, shut down; return the exit code.

        Returns:
            :data:`EXIT_OK` (0) if every handler finished; :data:`EXIT_UNFINISHED` (1)
            if the shutdown ran out of ``stop_timeout`` with handlers still running
            or events still queued (durable-group entries among them stay pending
            and are delivered again after their ``claim_idle``), or was forced.

        Raises:
            TransportConnectionError: the bus could not connect.
            BusClosedError: the bus was disconnected before.
            BusStateError: this worker is already running.
        """
        with self._lock:
            if self._running:
                raise BusStateError(f"worker {self._name} is already running")
            self._running = True
        try:
            with self._signal_handlers(), _event_lines(self) if self._log_events else _nothing():
                return self._run()
        finally:
            with self._lock:
                self._running = False

    # -- the phases --------------------------------------------------------------------

    def _run(self) -> int:
        bus = self._bus
        if not bus.is_connected():
            bus.connect()
        try:
            self._log_startup()
            if self._on_ready is not None:
                self._on_ready()
            self._wait_for_stop()
        except BaseException:
            log.exception("worker %s failed; disconnecting", self._name)
            bus.disconnect(timeout=0)
            raise
        return self._shutdown()

    def _wait_for_stop(self) -> None:
        while not self._stop_requested:
            try:
                time.sleep(_POLL)
            except KeyboardInterrupt:  # SIGINT not handled by us (install_signals=False)
                self._reason = "KeyboardInterrupt"
                self._stop_requested = True

    def _shutdown(self) -> int:
        bus = self._bus
        before = bus.get_stats()
        log.info(
            "worker %s: warm shutdown (%s): finishing %d running or queued event(s) within %gs; %s",
            self._name,
            self._reason,
            _unfinished(before),
            self._stop_timeout,
            "a second SIGTERM or SIGINT forces the exit"
            if self._signals_installed()
            else "stop(force=True) forces it",
        )
        started = time.monotonic()
        failure: list[BaseException] = []

        def disconnect() -> None:
            try:
                bus.disconnect(timeout=self._stop_timeout)
            except BaseException as exc:  # handed to the waiting thread, which raises it
                failure.append(exc)

        closer = threading.Thread(target=disconnect, name="eventbus-worker-shutdown", daemon=True)
        closer.start()
        while closer.is_alive():
            try:
                closer.join(_POLL)
            except KeyboardInterrupt:
                self._force_requested = True
            if self._force_requested and closer.is_alive():
                return self._cold_shutdown()
        if failure:
            raise failure[0]
        after = bus.get_stats()
        left = _unfinished(after) + after.abandoned_handlers + after.events_dropped
        left -= before.events_dropped
        elapsed = time.monotonic() - started
        summary = (
            f"{after.events_handled} handled, {after.events_failed} failed, "
            f"{after.events_retried} retried in {after.uptime:.1f}s of uptime"
        )
        if left > 0:
            log.warning(
                "worker %s stopped after %.1fs with %d event(s) unfinished: handlers still "
                "running or queued events dropped (durable-group ones are delivered again "
                "after claim_idle); %s",
                self._name,
                elapsed,
                left,
                summary,
            )
            return EXIT_UNFINISHED
        log.info("worker %s stopped cleanly in %.1fs; %s", self._name, elapsed, summary)
        return EXIT_OK

    def _cold_shutdown(self) -> int:
        log.warning(
            "worker %s: cold shutdown: not waiting for %d running or queued event(s) "
            "(durable-group entries stay pending and are delivered again after claim_idle)",
            self._name,
            _unfinished(self._bus.get_stats()),
        )
        if self._forced_by_signal:
            # Python would join the handler threads at exit (concurrent.futures does):
            # a signalled cold shutdown leaves now, as Celery's does.
            _flush_logs()
            os._exit(EXIT_UNFINISHED)
        return EXIT_UNFINISHED

    def _log_startup(self) -> None:
        bus = self._bus
        subscriptions = bus.subscriptions()
        groups = bus.get_stats().groups
        log.info(
            "worker %s: bus %s (service %s, pid %d) connected to %s; %d subscription(s), "
            "%d durable group(s)",
            self._name,
            bus.client_id,
            bus.service_name,
            os.getpid(),
            bus.config.transport_url,
            len(subscriptions),
            len(groups),
        )
        for sub in subscriptions:
            log.info("  %s  %-24s -> %s", sub.id, sub.pattern, _callable_name(sub.handler))
        for group in groups:
            log.info("  group %s  %s (consumer %s)", group.group, group.pattern, group.consumer)
        if bus.rooms:
            log.info("  rooms: %s", ", ".join(sorted(bus.rooms)))
        if not subscriptions:
            log.warning("worker %s has no subscriptions: it will handle nothing", self._name)
        log.info(
            "worker %s ready (%s to stop)",
            self._name,
            "SIGTERM or Ctrl-C" if self._signals_installed() else "stop()",
        )

    # -- signals -----------------------------------------------------------------------

    def _signals_installed(self) -> bool:
        return self._install_signals and threading.current_thread() is threading.main_thread()

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if not self._signals_installed():
            yield
            return
        previous: dict[int, Any] = {}
        try:
            for signum in _SIGNALS:
                previous[signum] = signal.signal(signum, self._on_signal)
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # No logging here: the main thread may be inside a logging call right now.
        if self._stop_requested:
            self._forced_by_signal = True
            self._force_requested = True
        else:
            self._reason = signal.Signals(signum).name
            self._stop_requested = True


def run_worker(
    bus: EventBus,
    *,
    name: str,
    stop_timeout: float | None = None,
    install_signals: bool = True,
    on_ready: Callable[[], None] | None = None,
    log_events: bool = True,
) -> int:
    """Run ``bus``'s handlers until SIGTERM / SIGINT, shut down gracefully, return the code.

    The one-call form of :class:`Worker` (same arguments). Example::

        sys.exit(run_worker(bus, name="myapp.events:bus", stop_timeout=30))

    Returns:
        0 if every handler finished, 1 if some were abandoned (see :meth:`Worker.run`).
        A second signal during the shutdown ends the process at once with status 1.
    """
    worker = Worker(
        bus,
        name=name,
        stop_timeout=stop_timeout,
        install_signals=install_signals,
        on_ready=on_ready,
        log_events=log_events,
    )
    return worker.run()


# -- helpers ---------------------------------------------------------------------------


def _unfinished(stats: EventBusStats) -> int:
    """Events taken by subscriptions and neither handled, failed nor dropped yet."""
    return sum(
        max(0, sub.received - sub.handled - sub.failed - sub.dropped) for sub in stats.subscriptions
    )


def _callable_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{qualname}" if module else qualname


def _flush_logs() -> None:
    for logger in (log, logging.getLogger("eventbus"), logging.getLogger()):
        for handler in logger.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


@contextlib.contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- per-event lines -------------------------------------------------------------------

_EVENTS_LOGGER = "eventbus.events"
_tap_lock = threading.Lock()
_tap_users = 0
_tap_saved: tuple[int, bool] = (logging.NOTSET, True)


class _EventLines(logging.Handler):
    """Re-log the dispatcher's per-event DEBUG records of one bus as INFO lines."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(logging.DEBUG)
        self._worker = worker
        self._names: dict[str, str] = {}

    def _handler_name(self, subscription_id: str) -> str | None:
        name = self._names.get(subscription_id)
        if name is None:  # subscribed since the last look, or another bus's
            self._names = {
                sub.id: getattr(sub.handler, "__qualname__", None) or repr(sub.handler)
                for sub in self._worker.bus.subscriptions()
            }
            name = self._names.get(subscription_id)
        return name

    def emit(self, record: logging.LogRecord) -> None:
        try:
            handling = getattr(record, "handling", None)
            if not isinstance(handling, dict):
                return
            handler = self._handler_name(str(handling["subscription"]))
            if handler is None:
                return  # another bus in this process
            level, line = _describe(handling, handler)
            log.log(level, "%s", line)
        except Exception:
            self.handleError(record)


def _describe(handling: dict[str, Any], handler: str) -> tuple[int, str]:
    """The level and readable line for one ``eventbus.events`` record."""
    outcome = handling["outcome"]
    duration = handling.get("duration")
    took = "" if duration is None else f" in {_duration(duration)}"
    where = f"{handling['subscription']} {handler}"
    if handling.get("group"):
        where += f", group {handling['group']}"
    head = f"{outcome:<7} {handling['event_type']} {handling['event_id']}"
    if outcome == "handled":
        return logging.INFO, f"{head}{took} [{where}]"
    if outcome == "retry":
        return (
            logging.INFO,
            f"{head} attempt {handling['attempt']} failed{took} [{where}]: {handling['error']}",
        )
    error = handling.get("error") or "timed out"
    return (
        logging.WARNING,
        f"{head} after {handling['attempt']} attempt(s){took} [{where}]: {error}",
    )


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


@contextlib.contextmanager
def _event_lines(worker: Worker) -> Iterator[None]:
    """Listen on ``eventbus.events`` for the worker's run (shared by workers in a process).

    The logger is set to DEBUG and stops propagating while any worker runs (its
    DEBUG records would otherwise reach every handler of the ``eventbus`` logger);
    its level and propagation come back when the last worker stops.
    """
    global _tap_users, _tap_saved
    events = logging.getLogger(_EVENTS_LOGGER)
    handler = _EventLines(worker)
    with _tap_lock:
        if _tap_users == 0:
            _tap_saved = (events.level, events.propagate)
            events.setLevel(logging.DEBUG)
            events.propagate = False
        _tap_users += 1
        events.addHandler(handler)
    try:
        yield
    finally:
        with _tap_lock:
            events.removeHandler(handler)
            _tap_users -= 1
            if _tap_users == 0:
                events.setLevel(_tap_saved[0])
                events.propagate = _tap_saved[1]
