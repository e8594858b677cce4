"""The gateway commands of ``eventbus``: ``gateway`` (serve) and ``token`` (mint a dev token).

Part of :mod:`eventbus.cli` (which adds them to its parser), kept apart for size::

    EVENTBUS_GATEWAY_KEYS="k1:$(openssl rand -hex 32)" \\
        eventbus --url redis://localhost:6379/0 gateway --origins http://localhost:3000
    eventbus token --user user-456 --rooms 'photo:*'
    eventbus token --service thumbnailer --scopes 'publish:photo.*' 'subscribe:photo.*'

Both need the ``gateway`` extra (``shared-infra-event-bus[gateway]``);
:mod:`eventbus.gateway` is imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from eventbus import EventBusConfig
from eventbus.cli._common import (
    EXIT_OK,
    UsageError,
    add_command,
    positive_int,
    seconds,
)

__all__ = ["add_gateway_commands"]

_KEYS_HELP = (
    "signing keys KID:SECRET[,KID2:SECRET2] (default: $EVENTBUS_GATEWAY_KEYS); each secret "
    "at least 32 bytes; tokens name their key in the header's kid"
)
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError(f"expected 0-65535, got {text!r}")
    return value


def add_gateway_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway`` and ``token`` to ``commands``."""
    gateway = add_command(
        commands,
        "gateway",
        _run_gateway,
        "run the Socket.IO gateway (browsers and outside services)",
        "Serve the Socket.IO gateway until SIGINT or SIGTERM (then close every socket, "
        "remove this node's presence, exit 0). Relays room, user and broadcast events of "
        "the Redis named by --url (before or after the command) or EVENTBUS_URL to "
        "WebSocket clients that connect with a token; see docs/gateway.md. Run several "
        "behind a load balancer: each relays to its own sockets. Prints 'eventbus "
        "gateway listening on http://HOST:PORT ...' once it accepts connections; exits "
        "1 if it cannot start (Redis unreachable, port in use).",
    )
    gateway.add_argument(
        "--url",
        dest="gateway_url",
        metavar="URL",
        help="the Redis of the buses (default: the global --url, else $EVENTBUS_URL / "
        "REDIS_HOST...)",
    )
    gateway.add_argument(
        "--host", default="127.0.0.1", help="listen address (default: %(default)s)"
    )
    gateway.add_argument(
        "--port", type=_port, default=3003, help="listen port, 0 for any (default: %(default)s)"
    )
    gateway.add_argument(
        "--origins",
        metavar="LIST",
        help="browser origins allowed by CORS, comma-separated, or '*' (default: "
        "$EVENTBUS_GATEWAY_ORIGINS, else same origin only)",
    )
    gateway.add_argument("--keys", metavar="KID:SECRET,...", help=_KEYS_HELP)
    gateway.add_argument("--audience", help="the aud every token must carry (default: eventbus)")
    gateway.add_argument(
        "--max-payload", type=positive_int, metavar="BYTES", help="largest client message (64 KiB)"
    )
    gateway.add_argument(
        "--max-rooms",
        type=positive_int,
        metavar="N",
        help="rooms per socket besides its own (100)",
    )
    gateway.add_argument(
        "--connect-rate",
        type=_non_negative,
        metavar="PER_S",
        help="new connections per second per client IP, 0 = no limit (20)",
    )
    gateway.add_argument(
        "--connect-burst", type=positive_int, metavar="N", help="burst above --connect-rate (40)"
    )
    gateway.add_argument(
        "--presence-ttl",
        type=seconds,
        metavar="S",
        help="membership lifetime without heartbeat (15)",
    )
    gateway.add_argument(
        "--heartbeat-interval", type=seconds, metavar="S", help="membership refresh period (5)"
    )
    gateway.add_argument(
        "--service-name",
        dest="gateway_name",
        metavar="NAME",
        help="this node's name in `eventbus stats` (default: gateway)",
    )
    gateway.add_argument(
        "--log-level", choices=_LOG_LEVELS, default="warning", help="uvicorn's log level"
    )

    token = add_command(
        commands,
        "token",
        _run_token,
        "mint a development token for the gateway",
        "Print a signed token (HS256) for a user or a service. The key comes from --key, "
        "else the first of $EVENTBUS_GATEWAY_KEYS (or the one --kid names). For "
        "production, have your own auth service sign tokens with the same keys.",
    )
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="U", help="the user id (sub); the socket joins user:U")
    who.add_argument(
        "--service", metavar="NAME", help="a service token (namespace /service) for NAME"
    )
    token.add_argument(
        "--rooms", metavar="GLOB", nargs="+", default=[], help="room patterns the user may join"
    )
    token.add_argument(
        "--scopes",
        metavar="SCOPE",
        nargs="+",
        default=[],
        help="a service's scopes: publish:GLOB subscribe:GLOB rooms:GLOB presence broadcast",
    )
    token.add_argument("--ttl", type=seconds, default=3600.0, help="lifetime, seconds (3600)")
    token.add_argument("--kid", help="which key of the key list signs")
    token.add_argument("--key", metavar="KID:SECRET", help="sign with this key instead")
    token.add_argument("--audience", default="eventbus", help="aud (default: %(default)s)")


def _keys_text(args: argparse.Namespace) -> str:
    text = getattr(args, "keys", None) or os.environ.get("EVENTBUS_GATEWAY_KEYS", "")
    if not text:
        raise UsageError("no signing key: pass --keys KID:SECRET or set EVENTBUS_GATEWAY_KEYS")
    return str(text)


def _run_gateway(args: argparse.Namespace, config: EventBusConfig) -> int:
    from eventbus.gateway import GatewayConfig, serve  # needs the extra

    if args.gateway_url is not None:
        config = EventBusConfig.from_url(args.gateway_url, service_name=args.service_name)
    if config.redis is None:
        raise UsageError(
            f"the gateway needs Redis, not {config.transport_url}: pass --url redis://... "
            "or set EVENTBUS_URL"
        )
    options: dict[str, Any] = {
        "redis": config.redis,
        "host": args.host,
        "port": args.port,
        "keys": _keys_text(args),
    }
    origins = (
        args.origins if args.origins is not None else os.environ.get("EVENTBUS_GATEWAY_ORIGINS")
    )
    if origins:
        options["origins"] = origins
    audience = args.audience or os.environ.get("EVENTBUS_GATEWAY_AUDIENCE")
    if audience:
        options["audience"] = audience
    for option, field in (
        ("max_payload", "max_payload"),
        ("max_rooms", "max_rooms_per_socket"),
        ("connect_rate", "connect_rate"),
        ("connect_burst", "connect_burst"),
        ("presence_ttl", "presence_ttl"),
        ("heartbeat_interval", "heartbeat_interval"),
        ("gateway_name", "service_name"),
    ):
        value = getattr(args, option)
        if value is not None:
            options[field] = value
    gateway_config = GatewayConfig(**options)
    if not args.verbose:
        logging.getLogger("eventbus").setLevel(logging.INFO)
    return serve(gateway_config, log_level=args.log_level)


def _run_token(args: argparse.Namespace, config_from_args: EventBusConfig) -> int:
    from eventbus.gateway import mint_token, parse_keys  # needs the extra

    if args.key is not None:
        keys = parse_keys(args.key)
        if len(keys) != 1:
            raise UsageError("--key takes one KID:SECRET")
    else:
        keys = parse_keys(_keys_text(args))
    if not keys:
        raise UsageError("no signing key given")
    kid = args.kid if args.kid is not None else next(iter(keys))
    if kid not in keys:
        raise UsageError(f"--kid {kid!r} is not among the keys ({', '.join(keys)})")
    if args.scopes and args.service is None:
        raise UsageError("--scopes is for service tokens (--service NAME)")
    token = mint_token(
        kid=kid,
        secret=keys[kid],
        sub=args.user if args.user is not None else args.service,
        ttl=args.ttl,
        rooms=args.rooms,
        scopes=args.scopes,
        service=args.service,
        audience=args.audience,
    )
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    return EXIT_OK
