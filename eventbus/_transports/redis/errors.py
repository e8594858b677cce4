"""redis-py's errors as eventbus errors: the one mapping of the Redis transport.

Every module of the transport (pools, listener, presence, streams) raises what these
functions return, chained with ``raise ... from`` so the redis-py error stays visible
as the cause; no redis-py error leaves the transport. The rules:

* a socket timeout is "no answer within the deadline": a
  :class:`~eventbus.PublishTimeoutError` for a publish (the message may have been
  sent), else a plain :class:`~eventbus.TransportError`;
* a connection error (refused, reset, closed) is a
  :class:`~eventbus.TransportConnectionError`;
* Redis refusing a command is a :class:`~eventbus.TransportError` naming the reply,
  or a :class:`~eventbus.GroupMissingError` when the stream or its consumer group is
  gone (``NOGROUP``, and a blocked read whose key was deleted), also from inside a
  script.
"""

from __future__ import annotations

import re
from typing import Any, Final

import redis

from eventbus._errors import (
    GroupMissingError,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
)

__all__ = ["check_reply", "is_group_missing", "map_error", "map_refusal"]

#: Error prefixes meaning the stream or its consumer group is gone.
_MISSING: Final = ("NOGROUP", "UNBLOCKED the stream key no longer exists")
#: What Redis < 7.0 puts before the error of a command that failed inside a script.
_SCRIPT_ERROR: Final = re.compile(r"Error running script \(call to f_[0-9a-f]+\): @\w+:\d+: ")


def map_error(
    exc: Exception, what: str, timeout: float, *, publish: bool = False
) -> TransportError:
    """The eventbus error for a redis-py error (the caller chains it with ``from``).

    Args:
        exc: what redis-py raised.
        what: the operation, as the message begins (``"publish to 'ch'"``).
        timeout: the deadline the operation had, for the timeout message.
        publish: a timeout becomes a :class:`~eventbus.PublishTimeoutError`.

    Example::

        try:
            client.ping()
        except redis.RedisError as exc:
            raise map_error(exc, "ping", timeout) from exc
    """
    if isinstance(exc, redis.TimeoutError):
        message = f"{what}: no answer from Redis within {timeout}s"
        return PublishTimeoutError(message, timeout=timeout) if publish else TransportError(message)
    if isinstance(exc, redis.ConnectionError):
        return TransportConnectionError(f"{what}: {exc}")
    return TransportError(f"{what}: {exc}")


def is_group_missing(exc: redis.ResponseError) -> bool:
    """Whether Redis refused because the stream or its consumer group is gone, also from
    inside a script (which Redis < 7.0 reports as ``Error running script ...: NOGROUP``)."""
    text = str(exc)
    script = _SCRIPT_ERROR.match(text)
    return text[script.end() if script else 0 :].startswith(_MISSING)


def map_refusal(exc: redis.ResponseError, what: str, stream: str, group: str) -> TransportError:
    """The eventbus error for a command Redis refused on a group's stream: a
    :class:`~eventbus.GroupMissingError` when the stream or group is gone, else a
    :class:`~eventbus.TransportError` with Redis's reply."""
    if is_group_missing(exc):
        return GroupMissingError(
            f"{what}: the stream or its consumer group is gone ({exc})", stream=stream, group=group
        )
    return TransportError(f"{what}: {exc}")


def check_reply(reply: Any, what: str, stream: str = "", group: str = "") -> Any:
    """``reply``, unless Redis refused the command: then raise its error (a lost group
    is a :class:`~eventbus.GroupMissingError` when ``stream`` is given).

    Raises:
        GroupMissingError: the stream or consumer group ``stream``/``group`` is gone.
        TransportError: Redis refused the command otherwise.
    """
    if isinstance(reply, redis.ResponseError):
        if stream:
            raise map_refusal(reply, what, stream, group) from reply
        raise TransportError(f"{what}: {reply}") from reply
    return reply
