"""``manage.py eventbus_worker``: run the project's declared handlers until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventbus import EventBusError
from eventbus.cli._worker import run_worker
from eventbus.contrib.django.project import project_settings, start_handlers

__all__ = ["Command"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Command(BaseCommand):  # type: ignore[misc]  # django is untyped here
    """Run every ``@bus.on`` handler of the installed apps' ``events.py`` as a worker.

    Connects the project's bus, logs each event it handles, and on SIGTERM or SIGINT
    stops reading, lets running and queued handlers finish (durable-group entries are
    acknowledged), disconnects and exits 0; 1 if handlers were still unfinished when
    ``--stop-timeout`` ran out (their group entries are delivered again later). A
    second signal during the shutdown exits at once.
    """

    help = (
        "Run the event handlers declared in the installed apps' events.py modules until "
        "SIGTERM or SIGINT, then shut down gracefully."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """``--stop-timeout``, ``--loglevel`` and ``--name``."""
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=None,
            help="seconds the shutdown waits for running handlers "
            "(default: EVENTBUS['SHUTDOWN_TIMEOUT'], 5)",
        )
        parser.add_argument(
            "-l",
            "--loglevel",
            default=None,
            choices=_LEVELS,
            type=str.upper,
            help="level of the eventbus log on stderr (default INFO) when LOGGING does "
            "not configure the 'eventbus' logger",
        )
        parser.add_argument(
            "--name", default=None, help="the worker's name in the log (default: SERVICE_NAME)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the handlers, run until a signal, exit with the worker's code."""
        stop_timeout = options["stop_timeout"]
        if stop_timeout is not None and stop_timeout < 0:
            raise CommandError(f"--stop-timeout must be >= 0, got {stop_timeout}")
        settings = project_settings()
        if settings.records:
            raise CommandError(
                f"EVENTBUS['BUS_CLASS'] is {settings.bus_class.__name__}, a recording bus for "
                "tests: it receives nothing from other processes, so a worker has nothing to "
                "run (use a real URL and no BUS_CLASS)"
            )
        _configure_logging(options["loglevel"])
        bus = start_handlers()
        if not bus.subscriptions():
            raise CommandError(
                "no handlers to run: declare them with @bus.on(...) in an events.py module "
                "of an app in INSTALLED_APPS (from eventbus.contrib.django import bus)"
            )
        name = options["name"] or bus.service_name

        def ready() -> None:
            self.stdout.write(
                f"eventbus worker {name} ready: {len(bus.subscriptions())} handler(s), "
                f"bus {bus.client_id}"
            )
            self.stdout.flush()

        try:
            code = run_worker(bus, name=name, stop_timeout=stop_timeout, on_ready=ready)
        except EventBusError as exc:
            raise CommandError(f"eventbus worker {name}: {exc}") from exc
        if code != 0:
            # A handler still running would hold the interpreter at exit (Python joins
            # the pool's threads): leave now, as the stop timeout promised.
            self.stderr.write(
                f"CommandError: eventbus worker {name} stopped with unfinished handlers "
                "(see the log)"
            )
            self.stdout.flush()
            self.stderr.flush()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _configure_logging(level: str | None) -> None:
    """Send the ``eventbus`` log to stderr unless ``LOGGING`` already routes it."""
    logger = logging.getLogger("eventbus")
    if level is not None or logger.level == logging.NOTSET:
        logger.setLevel(level or "INFO")
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
