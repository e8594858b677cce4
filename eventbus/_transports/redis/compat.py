"""What differs between the redis-py releases that eventbus supports (5.0.1 to 8.x).

The Redis transport's pools and the gateway's ``/service`` listener ask for the same
bare handshake: RESP2, no ``CLIENT SETINFO`` (two round trips per connect, and an
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
from typing import Any

import redis.asyncio
import redis.asyncio.retry
import redis.connection
import redis.retry
from redis.backoff import NoBackoff

__all__ = [
    "async_client_handshake",
    "async_no_retry",
    "connection_handshake",
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


def connection_handshake() -> dict[str, Any]:
    """Keyword arguments for a synchronous ``redis.ConnectionPool`` (and its
    connections): RESP2, no ``CLIENT SETINFO``, no maintenance notifications."""
    return _handshake(redis.connection.AbstractConnection.__init__)


def async_client_handshake() -> dict[str, Any]:
    """The same for ``redis.asyncio.Redis(...)`` built from host/port keyword arguments."""
    return _handshake(redis.asyncio.Redis.__init__)


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
