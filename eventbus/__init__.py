"""eventbus: a synchronous, thread-based event bus for Python services on Redis.

Publish from request handlers, handle in-process on a thread pool, and reach browsers
through the Socket.IO gateway. Start with :class:`EventBus`.
"""

from __future__ import annotations

from eventbus._core.config import (
    ClientConfig,
    EventBusConfig,
    OverflowPolicy,
    PerformanceConfig,
    RedisConfig,
)
from eventbus._core.options import GroupOptions
from eventbus._errors import (
    BusClosedError,
    BusStateError,
    ConfigurationError,
    DecodeError,
    EventBusError,
    EventTooLargeError,
    FilterError,
    GatewayAuthError,
    GatewayRefusedError,
    GroupMissingError,
    HandlerError,
    HandlerTimeoutError,
    InvalidFilterError,
    InvalidNameError,
    InvalidPatternError,
    PublishBufferFullError,
    PublishTimeoutError,
    SerializationError,
    TransportConnectionError,
    TransportError,
    ValidationError,
)
from eventbus._models import (
    CheckResult,
    ClientInfo,
    Event,
    EventBusStats,
    Gap,
    GroupStats,
    HealthCheckResult,
    HealthStatus,
    PublishResult,
    SubscriptionStats,
)
from eventbus._runtime.bus import EventBus
from eventbus._runtime.subscription import Subscription
from eventbus._transports.base import DeadLetter, GroupInfo

__version__ = "0.1.0.dev0"

# Public names say where users import them from (docs, reprs, tracebacks), as httpx does.
for _name in (
    BusClosedError,
    BusStateError,
    CheckResult,
    ClientConfig,
    ClientInfo,
    ConfigurationError,
    DeadLetter,
    DecodeError,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    EventBusStats,
    EventTooLargeError,
    FilterError,
    Gap,
    GatewayAuthError,
    GatewayRefusedError,
    GroupInfo,
    GroupMissingError,
    GroupOptions,
    GroupStats,
    HandlerError,
    HandlerTimeoutError,
    HealthCheckResult,
    InvalidFilterError,
    InvalidNameError,
    InvalidPatternError,
    PerformanceConfig,
    PublishBufferFullError,
    PublishResult,
    PublishTimeoutError,
    RedisConfig,
    SerializationError,
    Subscription,
    SubscriptionStats,
    TransportConnectionError,
    TransportError,
    ValidationError,
):
    _name.__module__ = "eventbus"
del _name

__all__ = [
    "BusClosedError",
    "BusStateError",
    "CheckResult",
    "ClientConfig",
    "ClientInfo",
    "ConfigurationError",
    "DeadLetter",
    "DecodeError",
    "Event",
    "EventBus",
    "EventBusConfig",
    "EventBusError",
    "EventBusStats",
    "EventTooLargeError",
    "FilterError",
    "Gap",
    "GatewayAuthError",
    "GatewayRefusedError",
    "GroupInfo",
    "GroupMissingError",
    "GroupOptions",
    "GroupStats",
    "HandlerError",
    "HandlerTimeoutError",
    "HealthCheckResult",
    "HealthStatus",
    "InvalidFilterError",
    "InvalidNameError",
    "InvalidPatternError",
    "OverflowPolicy",
    "PerformanceConfig",
    "PublishBufferFullError",
    "PublishResult",
    "PublishTimeoutError",
    "RedisConfig",
    "SerializationError",
    "Subscription",
    "SubscriptionStats",
    "TransportConnectionError",
    "TransportError",
    "ValidationError",
    "__version__",
]
