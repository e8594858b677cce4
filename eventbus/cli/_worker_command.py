"""``eventbus worker MODULE:BUS``: the command around :func:`eventbus.cli._worker.run_worker`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from eventbus import (
    EventBus,
    EventBusConfig,
    TransportError,
)
from eventbus.cli._common import (
    UsageError,
    add_command,
    bounded,
    cannot_connect,
    flush_stdio,
    note_if_in_process,
)

# -- worker --------------------------------------------------------------------------------

_WORKER_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_worker_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Add ``worker`` to the ``eventbus`` command."""
    worker = add_command(
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
        type=bounded(float, 0, strict=False),
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
        raise UsageError(f"expected MODULE or MODULE:BUS, got {target!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(
                f"cannot import {module_name!r}: no module named {missing!r}"
            ) from None
        raise  # the module exists and failed: its traceback says why
    if attribute:
        found: Any = module
        for part in attribute.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None
        if not isinstance(found, EventBus):
            raise UsageError(
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
        raise UsageError(
            f"no EventBus found in module {module_name!r}: "
            "name it with MODULE:BUS, or call it `bus`"
        )
    names = ", ".join(sorted(name for name, _ in buses.values()))
    raise UsageError(
        f"module {module_name!r} has several EventBus objects ({names}): name one with MODULE:BUS"
    )


@contextlib.contextmanager
def _worker_logging(level: str) -> Iterator[None]:
    """Timestamped logs at ``level`` on stderr for the worker: the ``eventbus`` logger
    (already sent to stderr by :func:`logging_to_stderr`) and, if nothing else
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
        raise UsageError(
            "--url does not apply to `worker`: the module's bus keeps its own configuration "
            "(set it in the module, e.g. EventBus.from_env())"
        )
    name, bus = _import_target(args.target)
    level = "DEBUG" if args.verbose else args.log_level
    with _worker_logging(level):
        note_if_in_process(bus.config)
        try:
            code = run_worker(bus, name=name, stop_timeout=args.stop_timeout)
        except TransportError as exc:
            raise cannot_connect(bus.config, exc) from exc
    if code != WORKER_OK:
        # A handler still running would hold the interpreter at exit (Python joins the
        # pool's threads): leave now, as the shutdown's deadline promised.
        flush_stdio()
        os._exit(code)
    return code
