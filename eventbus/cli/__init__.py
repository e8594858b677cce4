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
from collections.abc import Callable, Sequence

from eventbus import ConfigurationError, EventBusConfig, EventBusError, ValidationError, __version__
from eventbus.cli._common import (
    EPILOG,
    EXIT_CANNOT_CONNECT,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CannotConnectError,
    UsageError,
    config_from_args,
    logging_to_stderr,
    print_error,
    silence_stdout,
)
from eventbus.cli._demo import add_demo_command
from eventbus.cli._events import add_event_commands
from eventbus.cli._gateway import add_gateway_commands
from eventbus.cli._groups import add_group_commands
from eventbus.cli._inspect import add_inspect_commands
from eventbus.cli._worker_command import add_worker_command

__all__ = [
    "EXIT_CANNOT_CONNECT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]

_DESCRIPTION = """\
Publish, watch and inspect events of an eventbus deployment.

The transport comes from --url, else from the environment as EventBus.from_env()
reads it (EVENTBUS_URL, else REDIS_HOST / REDIS_PORT / REDIS_USERNAME /
REDIS_PASSWORD / REDIS_DB / EVENTBUS_KEY_PREFIX), else memory://, the in-process
broker, which only the `demo` can use to any effect: no other process shares it.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``eventbus`` command (for docs and completion tools)."""
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description=_DESCRIPTION,
        epilog=EPILOG,
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

    add_event_commands(commands)
    add_inspect_commands(commands)
    add_group_commands(commands)
    add_worker_command(commands)
    add_gateway_commands(commands)
    add_demo_command(commands)
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
    with logging_to_stderr(verbose=args.verbose):
        run: Callable[[argparse.Namespace, EventBusConfig], int] = args.run
        try:
            return run(args, config_from_args(args))
        except CannotConnectError as exc:
            print_error(str(exc))
            return EXIT_CANNOT_CONNECT
        except (UsageError, ConfigurationError, ValidationError) as exc:
            print_error(f"error: {exc}")
            return EXIT_USAGE
        except EventBusError as exc:
            print_error(f"{type(exc).__name__}: {exc}")
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print_error("interrupted")
            return 130
        except BrokenPipeError:  # e.g. `eventbus listen | head -1`: the reader is done
            silence_stdout()
            return EXIT_OK
