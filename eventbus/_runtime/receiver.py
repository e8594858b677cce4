"""The listener side of a bus: routing table and what runs on the listener thread.

The transport calls :meth:`Receiver.on_message` from its listener thread for every
message. It decodes, drops duplicates, notes gaps, matches, filters, and offers the
event to each matching subscription's queue; it never runs a handler (docs/concepts.md,
"Threads").
Subscriptions are added and removed by other threads: the tables are replaced, never
mutated, so the listener reads them without a lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from eventbus._core.envelope import decode
from eventbus._core.loss import LossTracker
from eventbus._core.stats import Counters
from eventbus._errors import DecodeError, FilterError
from eventbus._models import Gap
from eventbus._runtime.dispatch import Route
from eventbus._runtime.hooks import Hooks
from eventbus._runtime.wiring import Executor
from eventbus._transports.base import LinkEvent, LinkState

__all__ = ["Receiver"]

log = logging.getLogger("eventbus")


class Receiver:
    """Implements :class:`~eventbus._transports.base.MessageSink` for one bus."""

    def __init__(
        self,
        *,
        counters: Counters,
        hooks: Hooks,
        on_reconnect: Callable[[], None],
        groups_channel: str = "",
        on_groups_changed: Callable[[], None] | None = None,
    ) -> None:
        self._counters = counters
        self._hooks = hooks
        self._on_reconnect = on_reconnect
        self._loss = LossTracker()
        self._logged_kinds: set[str] = set()
        #: pattern key -> routes subscribed through it
        self.by_key: dict[str, tuple[Route, ...]] = {}
        #: every route, oldest first (rooms and broadcasts are matched against all)
        self.routes: tuple[Route, ...] = ()
        self.dispatcher: Executor | None = None
        self.last_message_at: float | None = None
        #: Set when the bus is closing: messages are no longer taken.
        self.closing = False
        self._groups_channel = groups_channel
        self._on_groups_changed = on_groups_changed

    def add(self, key: str, route: Route) -> bool:
        """Route ``key``'s messages to ``route`` too; True if ``key`` is new."""
        existing = self.by_key.get(key, ())
        self.by_key = {**self.by_key, key: (*existing, route)}
        self.routes = (*self.routes, route)
        return not existing

    def remove(self, key: str, route: Route) -> bool:
        """Stop routing to ``route``; True if no route uses ``key`` any more."""
        self.routes = tuple(r for r in self.routes if r is not route)
        remaining = tuple(r for r in self.by_key.get(key, ()) if r is not route)
        table = dict(self.by_key)
        if remaining:
            table[key] = remaining
        else:
            table.pop(key, None)
            self._loss.forget(key)
        self.by_key = table
        return not remaining

    def on_message(self, key: str, channel: str, payload: bytes) -> None:
        """Take one message from the transport (listener thread)."""
        self.last_message_at = time.monotonic()
        if self.closing:
            return
        if channel == self._groups_channel:  # a group was registered somewhere
            if self._on_groups_changed is not None:
                self._on_groups_changed()
            return
        counters = self._counters
        try:
            decoded = decode(payload, channel)
        except DecodeError as exc:
            counters.add("decode_errors")
            if exc.kind not in self._logged_kinds:
                self._logged_kinds.add(exc.kind)
                log.warning("undecodable message on %s (%s; logged once per kind)", channel, exc)
            self._hooks.report(exc, log_unhandled=False)  # logged once per kind above
            return
        event = decoded.event
        loss = self._loss
        # Sequence first: a retried publish is a duplicate id with a new number.
        if decoded.publisher is not None and decoded.sequence is not None:
            gap = loss.check(key, channel, decoded.publisher, decoded.sequence)
            if gap is not None:
                self._hooks.report_gap(gap)
        if loss.is_duplicate(key, event.id):
            counters.add("duplicates_dropped")
            return
        routes = self.by_key.get(key)
        if routes is None:  # a room or the broadcast channel: match types here
            routes = tuple(r for r in self.routes if r.pattern.matches(event.type))
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        for route in routes:
            if route.filter is not None:
                try:
                    accepted = route.filter(event)
                except Exception as exc:
                    counters.add("filter_errors")
                    error = FilterError(
                        f"filter of {route.id} ({route.pattern.source}) raised on event "
                        f"{event.id} ({event.type}): {exc!r}; the event was skipped",
                        subscription_id=route.id,
                        event_id=event.id,
                    )
                    error.__cause__ = exc
                    self._hooks.report(error, event)
                    continue
                if not accepted:
                    counters.add("events_filtered")
                    continue
            counters.add("events_received")
            dispatcher.offer(route, event)

    def on_link(self, change: LinkEvent) -> None:
        """Take a change of the listener's link (listener thread)."""
        if change.state is LinkState.DISCONNECTED:
            log.warning("listener disconnected (%s); reconnecting", change.reason)
            return
        self._counters.add("reconnects")
        self._loss.reset()
        self._on_reconnect()
        self._hooks.report_gap(
            Gap(
                reason="reconnect",
                detail=f"the listener was disconnected ({change.reason}); events published "
                "meanwhile did not arrive",
            )
        )
