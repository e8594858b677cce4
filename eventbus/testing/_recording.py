""":class:`RecordingBus`: the real :class:`~eventbus.EventBus`, recording, for tests.

It is an ``EventBus`` wired (:func:`eventbus._runtime.bus.wire`) to a recording
transport and an inline executor (:mod:`eventbus.testing._wiring`): publishing,
validation, encoding, matching, filters, retries, rooms and durable groups are the
bus's own code, and handlers run when a test calls :meth:`RecordingBus.drain`. This
module adds only what a test needs on top (docs/testing.md).
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from eventbus import (
    BusStateError,
    ClientInfo,
    ConfigurationError,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    HealthCheckResult,
    ValidationError,
)
from eventbus._runtime.bus import wire
from eventbus.testing._assertions import Where, describe_events, describe_query, select
from eventbus.testing._wiring import Recording

__all__ = ["DrainLimitError", "RecordingBus"]

#: The transport a recording bus reports in its health and client records.
_URL = "recording://"


class DrainLimitError(BusStateError):
    """:meth:`RecordingBus.drain` hit its ``limit``: handlers keep publishing events.

    What is still pending stays queued; call ``drain()`` again to go on.

    Attributes:
        limit: the number of deliveries that ran.
        pending: deliveries still queued.
    """

    def __init__(self, message: str, *, limit: int, pending: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.pending = pending


class RecordingBus(EventBus):
    """An :class:`~eventbus.EventBus` that records publishes and runs handlers on demand.

    Pass it wherever application code takes an ``EventBus``: it is one, wired to a
    transport of its own that records every event published and delivers it at once,
    and to an executor that runs handlers only when :meth:`drain` is called, in the
    calling thread, in publish order. With ``eager=True`` each publish drains before
    it returns. Nothing leaves the process and no server is needed.

    Example::

        from eventbus.testing import RecordingBus

        with RecordingBus(service_name="photo-api") as bus:
            seen = []
            bus.subscribe("photo.*", seen.append)
            bus.publish("photo.uploaded", {"photoId": "123"})
            bus.assert_published("photo.uploaded", where={"photoId": "123"})
            assert bus.drain() == 1 and seen[0].data == {"photoId": "123"}

    Args:
        config: the configuration (its URL is never connected to; batching is off).
        service_name: shorthand for a default configuration with this service name
            (default ``"test"``); not together with ``config``.
        eager: run handlers inside each publish (see :meth:`drain`); also settable
            later as the ``eager`` attribute.

    Raises:
        ConfigurationError: both ``config`` and ``service_name`` were given, or an
            invalid ``service_name``.
    """

    def __init__(
        self,
        config: EventBusConfig | None = None,
        *,
        service_name: str | None = None,
        eager: bool = False,
    ) -> None:
        if config is None:
            config = EventBusConfig(service_name=service_name or "test", url="memory://")
        elif service_name is not None:
            raise ConfigurationError("pass config or service_name to RecordingBus, not both")
        elif isinstance(config, EventBusConfig) and config.performance.batch_size > 1:
            # Each publish is recorded as it is made, never from a flusher thread.
            performance = attrs.evolve(config.performance, batch_size=1)
            config = attrs.evolve(config, performance=performance)
        super().__init__(config)
        self.eager = bool(eager)
        self._recording = Recording(self._drain_if_eager, self.subscriptions)
        wire(self, self._recording)
        self.on_error(self._recording.record_error)

    def _drain_if_eager(self) -> None:
        if self.eager and self._recording.draining != threading.get_ident():
            self.drain()

    # -- what was published ------------------------------------------------------------

    @property
    def published(self) -> list[Event]:
        """Every event published on this bus, oldest first (a new list each time).

        Each is the :class:`~eventbus.Event` a subscriber would decode: ``room``,
        ``user`` and ``broadcast`` say how it was addressed.
        """
        with self._recording.lock:
            return list(self._recording.events)

    @property
    def errors(self) -> list[EventBusError]:
        """Every failure the bus reported, oldest first: :class:`~eventbus.HandlerError`
        and :class:`~eventbus.FilterError`, the original exception as ``__cause__``."""
        with self._recording.lock:
            return list(self._recording.errors)

    @property
    def pending(self) -> int:
        """Deliveries queued and not yet run by :meth:`drain`."""
        executor = self._recording.executor
        return 0 if executor is None else executor.pending

    def find_published(
        self,
        pattern: str = "*",
        *,
        where: Where = None,
        room: str | None = None,
        user: str | None = None,
    ) -> list[Event]:
        """The published events whose type matches ``pattern`` (Redis glob rules, as in
        :meth:`subscribe`) and that pass ``where``, oldest first.

        Args:
            pattern: a subscription pattern, e.g. ``photo.*``.
            where: a mapping that ``event.data`` must contain (nested mappings are
                subsets too), or a predicate ``Event -> bool``.
            room: only events published to this room (``user:<id>`` for a user).
            user: only events published to this user.

        Raises:
            InvalidPatternError: a bad pattern.
            ValidationError: ``where`` is neither a mapping nor a callable.
        """
        return select(self.published, pattern, where, room, user)

    def assert_published(
        self,
        pattern: str,
        *,
        where: Where = None,
        count: int | None = None,
        room: str | None = None,
        user: str | None = None,
    ) -> Event:
        """Assert that a matching event was published, and return the newest match.

        Example::

            event = bus.assert_published("photo.*", where={"photoId": "123"})
            bus.assert_published("notification.new", user="user-456", count=1)

        Args:
            pattern, where, room, user: as for :meth:`find_published`.
            count: the exact number of matching events; None means at least one.

        Raises:
            AssertionError: no match, or not ``count`` of them; the message lists
                every event that was published.
        """
        if count is not None and (
            not isinstance(count, int) or isinstance(count, bool) or count < 1
        ):
            raise ValidationError(
                "count must be an integer >= 1 or None (assert_not_published checks for "
                f"none), got {count!r}"
            )
        published = self.published
        found = select(published, pattern, where, room, user)
        if found and (count is None or len(found) == count):
            return found[-1]
        wanted = "an event" if count is None else f"{count} event(s)"
        raise AssertionError(
            f"expected {wanted} matching {describe_query(pattern, where, room, user)}, "
            f"found {len(found)}.\n{describe_events(published, 'Published')}"
        )

    def assert_not_published(
        self,
        pattern: str = "*",
        *,
        where: Where = None,
        room: str | None = None,
        user: str | None = None,
    ) -> None:
        """Assert that no published event matches (arguments as for :meth:`find_published`).

        Raises:
            AssertionError: some did; the message lists them.
        """
        found = self.find_published(pattern, where=where, room=room, user=user)
        if found:
            raise AssertionError(
                f"expected no event matching {describe_query(pattern, where, room, user)}, "
                f"found {len(found)}.\n{describe_events(found, 'Matching')}"
            )

    def clear(self) -> None:
        """Forget what was published, pending deliveries and recorded errors.

        Subscriptions, rooms, hooks, dead letters and counters stay.
        """
        self._recording.clear()

    # -- running handlers --------------------------------------------------------------

    def drain(self, *, raise_errors: bool = True, limit: int = 10_000) -> int:
        """Run every pending delivery, and what their handlers publish, until none is left.

        Runs in the calling thread, in order: events in the order they were
        published, each to its subscriptions in the order they were made; events
        that handlers publish are queued behind. A failing handler is retried at once
        per its subscription's ``retry_on_error``/``max_retries`` (no backoff sleep);
        a durable group's event that still fails is delivered again, up to its
        ``max_deliveries``, then goes to :meth:`dead_letters`. Each failure goes to the
        :meth:`on_error` hooks and to :attr:`errors`. A handler's ``timeout`` is not
        enforced.

        Args:
            raise_errors: once everything ran, raise the first failure not raised yet
                (the others are in :attr:`errors`, and its notes say how many).
                False only records them.
            limit: the most deliveries to run, a guard against handlers that publish
                each other's events forever.

        Returns:
            How many deliveries reached a handler (an event handed to one
            subscription counts once, whatever its retries; a filtered one not).

        Raises:
            HandlerError: a handler failed its last attempt; its exception is
                ``__cause__``.
            FilterError: a subscription's filter raised; its exception is ``__cause__``.
            DrainLimitError: ``limit`` deliveries ran and more are pending.
            BusStateError: called from inside a handler.
        """
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValidationError(f"limit must be an integer >= 1, got {limit!r}")
        recording = self._recording
        if recording.draining == threading.get_ident():
            raise BusStateError("drain() was called from a handler; it runs after it returns")
        with recording.drain_lock:
            recording.draining = threading.get_ident()
            try:
                ran = self._run_pending(limit)
            finally:
                recording.draining = None
        failures = recording.take_unraised()
        if failures and raise_errors:
            first = failures[0]
            if len(failures) > 1:
                first.add_note(
                    f"drain() had {len(failures)} failures; this is the first, all are in "
                    "RecordingBus.errors"
                )
            raise first
        return ran

    def _run_pending(self, limit: int) -> int:
        executor = self._recording.executor
        ran = 0
        while executor is not None:
            if not executor.pending:
                executor.poll()  # what waits in a group (a replay, a stopped consumer's)
                if not executor.pending:
                    break
            if ran >= limit:
                error = DrainLimitError(
                    f"drain() ran {limit} deliveries and {executor.pending} more are "
                    "pending: do handlers publish each other's events in a loop? (raise "
                    "limit= if not)",
                    limit=limit,
                    pending=executor.pending,
                )
                failures = self._recording.take_unraised()
                if failures:
                    error.add_note(f"{len(failures)} failure(s) before it: see .errors")
                raise error
            if executor.run_next():
                ran += 1
        return ran

    # -- what a recording bus says about itself ----------------------------------------

    def get_clients(self) -> list[ClientInfo]:
        """This bus alone (no other shares its broker), described as it is now.

        Raises:
            BusStateError: the bus is not connected.
        """
        stats: dict[str, Any] = self.get_stats().as_dict()
        del stats["subscriptions"]
        return [
            attrs.evolve(
                client,
                transport=_URL,
                subscriptions=tuple(sorted({sub.pattern for sub in self.subscriptions()})),
                rooms=tuple(sorted(self.rooms)),
                stats=stats,
            )
            for client in super().get_clients()
        ]

    def health_check(self) -> HealthCheckResult:
        """:meth:`EventBus.health_check <eventbus.EventBus.health_check>`, with
        ``recording://`` as the transport: healthy while connected."""
        return attrs.evolve(super().health_check(), transport=_URL)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected() else "not connected"
        return (
            f"<RecordingBus {self.service_name!r} {state}: "
            f"{len(self.published)} published, {self.pending} pending>"
        )
