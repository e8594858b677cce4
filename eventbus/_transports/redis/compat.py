"""How eventbus connects with redis-py: the one set of connection options, and what
differs between the redis-py releases that eventbus supports (5.0.1 to 8.x).

:func:`connection_options` is the one place that turns a
:class:`~eventbus._core.config.RedisConfig` into a pool's keyword arguments, for the
bus's synchronous pools (:mod:`eventbus._transports.redis.pools`) and the gateway's
asyncio ones (:mod:`eventbus.gateway._redis`) alike. Both ask for the same bare
handshake: RESP2, no ``CLIENT SETINFO`` (two round trips per connect, and an
error before Redis 7.2) and no maintenance notifications, and for no retries at all.
redis-py spells these differently by release:

- ``driver_info=None`` from 7.2; ``lib_name=None, lib_version=None`` before it (7.2+
  still takes them, with a ``DeprecationWarning``);
- ``retry``: an asyncio client needs ``redis.asyncio.retry.Retry`` (8.2 converts a
  synchronous one with a ``UserWarning`` and drops its ``call_with_retry``); both
  policies here come from one setting;
- ``ConnectionPool.get_connection()`` takes no command name from 5.3 (and warns when
  given one from 6.0); before 5.3 the name is required (and unused);
- ``maint_notifications_config`` from 7.0 on the synchronous side, later on the
  asyncio side (8.2 has it, 8.0 not); before that the feature does not exist and
  there is nothing to turn off.

The spelling is read from the installed release's signatures (not its version
number), once per process.
"""

from __future__ import annotations

import functools
import inspect
import re
import socket
from typing import TYPE_CHECKING, Any

import redis.asyncio
import redis.asyncio.connection
import redis.asyncio.retry
import redis.connection
import redis.retry
from redis.backoff import NoBackoff

if TYPE_CHECKING:
    from eventbus._core.config import RedisConfig

__all__ = [
    "async_no_retry",
    "connection_options",
    "lend",
    "no_retry",
]

# The one retry setting of the clients that must never retry nor reconnect by
# themselves: no retries, no backoff, and no "supported" errors, so that redis-py does not
# reconnect (and resubscribe) inside its failure callback either; every error reaches
# eventbus at once, which counts it, reports it and renews the link on its own schedule.
_NO_RETRY: dict[str, Any] = {"retries": 0, "supported_errors": ()}


def _accepts(function: Any, name: str) -> bool:
    return name in inspect.signature(function).parameters


@functools.cache
def _spelling(init: Any) -> tuple[bool, bool]:
    """Whether ``init`` takes ``driver_info`` and ``maint_notifications_config``."""
    return _accepts(init, "driver_info"), _accepts(init, "maint_notifications_config")


def _handshake(init: Any) -> dict[str, Any]:
    driver_info, maint_notifications = _spelling(init)
    options: dict[str, Any] = {"protocol": 2}
    if driver_info:
        options["driver_info"] = None
    else:
        options.update(lib_name=None, lib_version=None)
    if maint_notifications:
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options


def no_retry() -> redis.retry.Retry:
    """The never-retry policy for a synchronous client (see ``_NO_RETRY``)."""
    return redis.retry.Retry(NoBackoff(), **_NO_RETRY)


def async_no_retry() -> redis.asyncio.retry.Retry:
    """The same policy for a ``redis.asyncio`` client."""
    return redis.asyncio.retry.Retry(NoBackoff(), **_NO_RETRY)


def _needs_command_name() -> bool:
    parameter = inspect.signature(redis.connection.ConnectionPool.get_connection).parameters.get(
        "command_name"
    )
    return parameter is not None and parameter.default is inspect.Parameter.empty


if _needs_command_name():

    def lend(pool: redis.connection.ConnectionPool) -> Any:
        """A connection from ``pool`` (give it back with ``pool.release``)."""
        return pool.get_connection("_")  # redis-py < 5.3: required, and unused

else:

    def lend(pool: redis.connection.ConnectionPool) -> Any:
        """A connection from ``pool`` (give it back with ``pool.release``)."""
        return pool.get_connection()


def _keepalive_options() -> dict[int, int]:
    """TCP keepalive: first probe after 30 s idle, then every 5 s, dead after 3 misses."""
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # or macOS
    wanted = ((idle, 30), (getattr(socket, "TCP_KEEPINTVL", None), 5))
    return {c: v for c, v in (*wanted, (getattr(socket, "TCP_KEEPCNT", None), 3)) if c is not None}


def connection_options(
    config: RedisConfig, *, client_name: str, socket_timeout: float, asyncio: bool = False
) -> dict[str, Any]:
    """The keyword arguments of a ``ConnectionPool`` for ``config`` (``redis.asyncio``'s
    when ``asyncio``), every timeout, keepalive, TLS, handshake and retry setting explicit.

    Args:
        config: where Redis is and how to log in.
        client_name: the ``CLIENT SETNAME`` of every connection; characters Redis
            refuses there (spaces, anything outside ``!``..``~``) become ``_``.
        socket_timeout: the socket timeout of every command, seconds (the connect
            timeout is at most this too).
        asyncio: the connection classes and retry policy of ``redis.asyncio``.
    """
    kind = redis.asyncio.connection if asyncio else redis.connection
    options: dict[str, Any] = {
        "db": config.db,
        "username": config.username,
        "password": config.password,
        "client_name": re.sub(r"[^!-~]", "_", client_name),
        # RESP2, no CLIENT SETINFO, no maintenance notifications, in each redis-py
        # release's spelling: redis-py 8 defaults to RESP3 (one more HELLO round trip
        # per connect and maintenance-notification handshakes; RESP2 pub/sub replies
        # are plain arrays) and CLIENT SETINFO costs two round trips per connect.
        **_handshake(kind.AbstractConnection.__init__),
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(config.socket_connect_timeout, socket_timeout),
        # Never retry: not a PUBLISH (duplicates), not a connect (the caller's
        # deadline); redis-py 8's default client retries 10 times. No supported
        # errors either, so redis-py does not reconnect (and resubscribe) inside its
        # failure callback: errors reach us at once and our loops renew the link.
        # The connection still closes itself on a failed read or write.
        "retry": async_no_retry() if asyncio else no_retry(),
        "retry_on_error": [],
        "retry_on_timeout": False,
        # Pools discard connections the server closed before lending them; the
        # listeners run their own, stronger probes.
        "health_check_interval": 0,
    }
    if config.unix_socket_path:
        options.update(
            connection_class=kind.UnixDomainSocketConnection, path=config.unix_socket_path
        )
        return options
    options.update(
        connection_class=kind.SSLConnection if config.ssl else kind.Connection,
        host=config.host,
        port=config.port,
        socket_keepalive=config.socket_keepalive,
        socket_keepalive_options=_keepalive_options() if config.socket_keepalive else {},
    )
    if config.ssl:
        options.update(
            ssl_ca_certs=config.ssl_ca_certs, ssl_cert_reqs="required", ssl_check_hostname=True
        )
    return options
