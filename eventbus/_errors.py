"""The exceptions ``eventbus`` raises, rooted at :class:`EventBusError`.

::

    EventBusError
    ├── ConfigurationError (ValueError)        a config value or URL is invalid
    ├── ValidationError (ValueError)           bad input to a call; nothing was sent
    │   ├── InvalidNameError                   event type, room or user id
    │   ├── InvalidPatternError                subscription pattern
    │   ├── InvalidFilterError                 filter spec
    │   ├── SerializationError                 data is not JSON-serialisable
    │   └── EventTooLargeError                 encoded event over the size limit
    ├── BusStateError (RuntimeError)           the bus cannot do that in its state
    │   └── BusClosedError                     used after disconnect()
    ├── TransportError                         the transport failed; wraps its cause
    │   ├── TransportConnectionError           cannot reach the server
    │   │   └── GatewayAuthError               the gateway refused the token (``code``)
    │   ├── GatewayRefusedError                the gateway refused a request (``code``)
    │   ├── PublishTimeoutError                no answer within the publish deadline
    │   ├── PublishBufferFullError             the batch/outage buffer is full
    │   └── GroupMissingError                  a group's stream or consumer group is gone
    ├── DecodeError                            a message from the wire did not decode
    ├── FilterError                            a subscription's filter raised
    └── HandlerError                           a handler failed after its last attempt
        └── HandlerTimeoutError                ... by running past its timeout

Errors that carry extra fields pickle with them (Celery pickles exceptions), and
transport errors keep the redis or socketio error as ``__cause__``. No name here
shadows a builtin: use :class:`TransportConnectionError`, not ``ConnectionError``,
and :class:`PublishTimeoutError`, not ``TimeoutError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BusClosedError",
    "BusStateError",
    "ConfigurationError",
    "DecodeError",
    "EventBusError",
    "EventTooLargeError",
    "FilterError",
    "GatewayAuthError",
    "GatewayRefusedError",
    "GroupMissingError",
    "HandlerError",
    "HandlerTimeoutError",
    "InvalidFilterError",
    "InvalidNameError",
    "InvalidPatternError",
    "PublishBufferFullError",
    "PublishTimeoutError",
    "SerializationError",
    "TransportConnectionError",
    "TransportError",
    "ValidationError",
]


class EventBusError(Exception):
    """Base class of every exception raised by ``eventbus``."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields (and __notes__) live in __dict__: rebuild from it, since
        # the default reduce would call __init__ with the message alone.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class ConfigurationError(EventBusError, ValueError):
    """A configuration value, environment variable or URL is invalid."""


class ValidationError(EventBusError, ValueError):
    """Input to a call was rejected before any I/O; nothing was sent."""


class InvalidNameError(ValidationError):
    """An event type, room name or user id does not follow the naming rules."""


class InvalidPatternError(ValidationError):
    """A subscription pattern is malformed."""


class InvalidFilterError(ValidationError):
    """A filter is malformed or names an unknown operator."""


class SerializationError(ValidationError):
    """Event data (or headers) cannot be encoded as JSON."""


class EventTooLargeError(ValidationError):
    """The encoded event is larger than ``EventBusConfig.max_event_size``.

    Attributes:
        size: the encoded size in bytes.
        limit: the configured limit in bytes.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class BusStateError(EventBusError, RuntimeError):
    """The bus cannot do this in its current state (misuse)."""


class BusClosedError(BusStateError):
    """The bus was disconnected and cannot be used again."""


class TransportError(EventBusError):
    """The transport (Redis, the gateway) failed; the original error is ``__cause__``."""


class TransportConnectionError(TransportError):
    """The server cannot be reached, or the connection was lost."""


class PublishTimeoutError(TransportError):
    """A publish got no answer within its deadline; it may or may not have been sent.

    Attributes:
        timeout: the deadline that passed, in seconds.
    """

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message)
        self.timeout = timeout


class PublishBufferFullError(TransportError):
    """The publish buffer is full; the event was not accepted.

    Attributes:
        capacity: the buffer's size in events.
    """

    def __init__(self, message: str, *, capacity: int) -> None:
        super().__init__(message)
        self.capacity = capacity


class GroupMissingError(TransportError):
    """A durable group's stream or consumer group no longer exists on the server.

    Redis was flushed, or restarted without persistence. The bus recreates the group
    with a warning; nothing in the server can say what was lost.

    Attributes:
        stream: the group's stream key.
        group: the group's name.
    """

    def __init__(self, message: str, *, stream: str, group: str) -> None:
        super().__init__(message)
        self.stream = stream
        self.group = group


class GatewayRefusedError(TransportError):
    """The gateway (``http(s)://`` transport) refused a request; nothing was done.

    Attributes:
        code: the gateway's reason: ``forbidden`` (outside the token's scopes),
            ``malformed``, ``too_large``, ``unauthorized``, ``internal``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class GatewayAuthError(TransportConnectionError):
    """The gateway refused the connection.

    Attributes:
        code: ``unauthorized``, ``token_expired`` or ``rate_limited``.
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class DecodeError(EventBusError):
    """A message from the wire could not be decoded into an event.

    It is never raised to a caller: the bus counts it and hands it to the error hooks.

    Attributes:
        kind: what was wrong (``"utf8"``, ``"json"``, ``"envelope"``, ``"specversion"``).
        channel: the channel the message arrived on.
        payload: the first bytes of the message, for diagnosis.
    """

    def __init__(self, message: str, *, kind: str, channel: str, payload: bytes = b"") -> None:
        super().__init__(message)
        self.kind = kind
        self.channel = channel
        self.payload = payload


class FilterError(EventBusError):
    """A subscription's filter raised on an event; the event was skipped for it.

    It is never raised to a caller: the bus counts it and hands it to the error hooks.
    The filter's exception is ``__cause__``.

    Attributes:
        subscription_id: the subscription whose filter raised.
        event_id: the event it raised on.
    """

    def __init__(self, message: str, *, subscription_id: str, event_id: str) -> None:
        super().__init__(message)
        self.subscription_id = subscription_id
        self.event_id = event_id


class HandlerError(EventBusError):
    """A handler failed on its last attempt; the handler's exception is ``__cause__``.

    It is never raised to a caller: the bus counts it and hands it to the error hooks.

    Attributes:
        subscription_id: the subscription whose handler failed.
        event_id: the id of the event it failed on.
        event_type: the type of that event.
        attempts: how many attempts were made.
    """

    def __init__(
        self,
        message: str,
        *,
        subscription_id: str,
        event_id: str,
        event_type: str,
        attempts: int,
    ) -> None:
        super().__init__(message)
        self.subscription_id = subscription_id
        self.event_id = event_id
        self.event_type = event_type
        self.attempts = attempts


class HandlerTimeoutError(HandlerError):
    """A handler ran past its ``timeout``; its thread was abandoned, not killed."""


def _rebuild(cls: type[EventBusError], args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
    """Recreate an exception with keyword-only fields after unpickling."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(fields)
    return exc
