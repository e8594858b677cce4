"""Where a bus's messages travel and where its handlers run: the bus's one seam.

:class:`~eventbus.EventBus` builds both when it connects, through a :class:`Wiring`:

- the **transport** its messages travel on (:class:`~eventbus._transports.base.Transport`);
- the **executor** that runs its handlers (:class:`Executor`).

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

import attrs

from eventbus._core.config import EventBusConfig
from eventbus._core.stats import Counters, LatencyWindow
from eventbus._models import Event
from eventbus._runtime.dispatch import ConsumerLoop, ErrorReporter, Route
from eventbus._transports.base import Transport

__all__ = ["Executor", "Meters", "Wiring"]


class Executor(Protocol):
    """What runs a bus's handlers; the bus uses nothing else of it.

    :class:`~eventbus._runtime.dispatch.Dispatcher` runs them on a thread pool, as
    events arrive; the testing kit's :class:`~eventbus._runtime.inline.InlineExecutor`
    queues them and runs them when told to, in the caller's thread.
    """

    @property
    def abandoned(self) -> int:
        """Handler threads stuck past their timeout right now."""
        ...

    @property
    def overflow_drops(self) -> int:
        """Events dropped by full subscription queues so far."""
        ...

    @property
    def last_drop_at(self) -> float | None:
        """The monotonic time of the newest such drop."""
        ...

    def offer(self, route: Route, event: Event) -> None:
        """Queue ``event`` for ``route``; never runs user code (listener thread)."""
        ...

    def run_consumer(self, consumer: ConsumerLoop) -> None:
        """Run a group consumer's loop (its reads feed :meth:`offer`)."""
        ...

    def deactivate(self, route: Route) -> int:
        """Stop feeding ``route``; drop what it has queued and return how many."""
        ...

    def shutdown(self, timeout: float) -> bool:
        """Finish or drop what is queued, stop; False if events were left unfinished."""
        ...


@attrs.frozen(kw_only=True)
class Meters:
    """What an executor counts into: a bus's counters and latency windows.

    Attributes:
        counters: ``events_handled``, ``events_failed``... (``EventBus.get_stats``).
        handler_latency: how long handlers take, seconds.
        delivery_latency: from publish to the handler's start, seconds.
    """

    counters: Counters
    handler_latency: LatencyWindow
    delivery_latency: LatencyWindow


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
        self, config: EventBusConfig, meters: Meters, report: ErrorReporter
    ) -> Executor:
        """The executor that runs the handlers of one connection.

        Args:
            config: the bus's configuration.
            meters: the bus's counters and latency windows.
            report: where failures go (the bus's error hooks).
        """
        ...
