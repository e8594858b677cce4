"""Where a bus's messages travel and where its handlers run: the bus's one seam.

:class:`~eventbus.EventBus` builds both when it connects, through a :class:`Wiring`:

- the **transport** its messages travel on (:class:`~eventbus._transports.base.Transport`);
- the **executor** that runs its handlers (:class:`~eventbus._runtime.dispatch.Executor`).

A bus is wired with :data:`eventbus._runtime.bus.THREADED` (the transport its URL
names, handlers on a thread pool) unless :func:`eventbus._runtime.bus.wire` gave it
another wiring before it connected. The testing kit does: its ``RecordingBus`` is the
real ``EventBus`` over a recording transport and an
:class:`~eventbus._runtime.inline.InlineExecutor` (docs/testing.md). Everything
between the two (validation, encoding, routing, filters, retries, groups) is the
bus's own code either way.
"""

from __future__ import annotations

from typing import Protocol

from eventbus._core.config import EventBusConfig
from eventbus._core.stats import Counters, LatencyWindow
from eventbus._runtime.dispatch import ErrorReporter, Executor
from eventbus._transports.base import Transport

__all__ = ["Wiring"]


class Wiring(Protocol):
    """Builds a bus's transport and executor, once per connection."""

    def new_transport(
        self, config: EventBusConfig, *, client_name: str, control_channel: str
    ) -> Transport:
        """The transport for one connection of a bus configured by ``config``.

        Args:
            config: the bus's configuration.
            client_name: the bus's client id.
            control_channel: the bus's private channel (listener wake-ups).
        """
        ...

    def new_executor(
        self,
        config: EventBusConfig,
        *,
        counters: Counters,
        handler_latency: LatencyWindow,
        delivery_latency: LatencyWindow,
        report: ErrorReporter,
    ) -> Executor:
        """The executor that runs the handlers of one connection.

        Args:
            config: the bus's configuration.
            counters: the bus's counters (``events_handled``...).
            handler_latency, delivery_latency: the bus's latency windows.
            report: where failures go (the bus's error hooks).
        """
        ...
