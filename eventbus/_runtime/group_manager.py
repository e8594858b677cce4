"""The durable groups of one bus: registration, routing table, consumers, admin.

Everything here goes through ``transport.groups`` (a
:class:`~eventbus._transports.base.GroupStore`); a transport without one (the
``http(s)://`` gateway) loads no routing table, and a group subscription or an admin
call on it raises :class:`~eventbus.BusStateError`. See docs/groups.md.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence

from eventbus._core.keyspace import Keyspace
from eventbus._core.options import GroupOptions
from eventbus._core.stats import Counters
from eventbus._errors import BusStateError, ValidationError
from eventbus._models import DeadLetter, GroupInfo, GroupStats
from eventbus._runtime.dispatch import Route
from eventbus._runtime.groups import GroupConsumer, GroupRouter, group_spec
from eventbus._runtime.hooks import Hooks
from eventbus._runtime.wiring import Executor
from eventbus._transports.base import GroupStore, StreamTarget, Transport

__all__ = ["GroupManager"]

log = logging.getLogger("eventbus.groups")


class GroupManager:
    """Everything a bus does for durable groups, publisher and consumer side."""

    def __init__(
        self,
        *,
        keys: Keyspace,
        client_id: str,
        hooks: Hooks,
        counters: Counters,
        timeout: float,
    ) -> None:
        self._keys = keys
        self._client_id = client_id
        self._hooks = hooks
        self._counters = counters
        self._timeout = timeout
        self._lock = threading.Lock()
        self.router = GroupRouter(keys)
        self._routes: dict[str, tuple[Route, str, GroupOptions]] = {}  # route id -> ...
        self._consumers: dict[str, GroupConsumer] = {}  # route id -> consumer

    # -- publisher side ---------------------------------------------------------------

    def targets(self, event_type: str) -> tuple[StreamTarget, ...]:
        """The group streams a published event of ``event_type`` is appended to."""
        return self.router.targets(event_type)

    def reload(self, transport: Transport) -> None:
        """Read the registry again (at connect, on an announcement, each heartbeat)."""
        store = transport.groups
        if store is not None:
            self.router.load(store.registry_all(self._keys.groups_registry, self._timeout))

    # -- consumer side ----------------------------------------------------------------

    def add(self, route: Route, group: str, options: GroupOptions) -> None:
        """Remember a group subscription (started by :meth:`start_route` when connected)."""
        with self._lock:
            self._routes[route.id] = (route, group, options)

    def start_all(self, transport: Transport, dispatcher: Executor) -> None:
        """Register and start every group subscription (at connect)."""
        for route_id in list(self._routes):
            self.start_route(transport, dispatcher, route_id)

    def start_route(self, transport: Transport, dispatcher: Executor, route_id: str) -> None:
        """Register the route's group in the server and have ``dispatcher`` run its consumer.

        Raises:
            ValidationError: the group is registered with another pattern.
            TransportError: the server failed.
        """
        route, group, options = self._routes[route_id]
        store = _store(transport)
        registry = store.registry_all(self._keys.groups_registry, self._timeout)
        known = registry.get(group)
        if known is not None:
            pattern = json.loads(known).get("pattern")
            if pattern != route.pattern.source:
                raise ValidationError(
                    f"group {group!r} is registered with pattern {pattern!r}, not "
                    f"{route.pattern.source!r}: a group has one pattern (use another group "
                    "name, or delete the group's registry entry to change it)"
                )

        def register() -> None:
            store.registry_set(
                self._keys.groups_registry,
                group,
                group_spec(route.pattern.source, options),
                self._timeout,
            )
            store.group_create(
                self._keys.group_stream(group), group, options.start_id(), self._timeout
            )
            transport.publish(self._keys.groups_channel, group.encode(), self._timeout)
            self.reload(transport)

        register()
        consumer = GroupConsumer(
            store=store,
            keys=self._keys,
            group=group,
            route=route,
            consumer=options.consumer or f"{self._client_id}:{route.id}",
            options=options,
            dispatcher=dispatcher,
            hooks=self._hooks,
            counters=self._counters,
            timeout=self._timeout,
            register=register,
        )
        route.on_done = consumer.done
        with self._lock:
            self._consumers[route_id] = consumer
        dispatcher.run_consumer(consumer)

    def remove(self, route_id: str, timeout: float) -> bool:
        """Forget a group subscription and stop its consumer; False if not a group's."""
        with self._lock:
            found = self._routes.pop(route_id, None)
            consumer = self._consumers.pop(route_id, None)
        if consumer is not None:
            consumer.stop(timeout)
        return found is not None

    def stop_reading(self, timeout: float) -> None:
        """Stop every consumer thread; what they read is still handled and acked."""
        with self._lock:
            consumers = list(self._consumers.values())
        for consumer in consumers:
            consumer.stop(timeout)

    def flush_acks(self) -> None:
        """Acknowledge what every consumer's handlers finished (at shutdown, after the
        handlers drained and before the transport closes)."""
        with self._lock:
            consumers = list(self._consumers.values())
        for consumer in consumers:
            consumer.flush_acks()

    def dead_consumers(self) -> list[str]:
        """The groups whose consumer thread is not running."""
        return [c.group for c in list(self._consumers.values()) if not c.alive()]

    def stats(self) -> tuple[GroupStats, ...]:
        """Counters of every running group consumer."""
        return tuple(consumer.stats() for consumer in list(self._consumers.values()))

    # -- admin ------------------------------------------------------------------------

    def registered(self, transport: Transport) -> dict[str, str]:
        """Every group in the registry and its pattern."""
        self.reload(transport)
        return dict(self.router.patterns)

    def info(self, transport: Transport, group: str) -> GroupInfo:
        """A group's backlog, pending entries, consumers and dead letters."""
        return _store(transport).group_info(
            self._keys.group_stream(group),
            group,
            self._keys.dead_letter_stream(group),
            self._timeout,
        )

    def dead_letters(self, transport: Transport, group: str, count: int) -> list[DeadLetter]:
        """A group's oldest dead letters."""
        return _store(transport).dead_letters(
            self._keys.dead_letter_stream(group), count, self._timeout
        )

    def replay(self, transport: Transport, group: str, ids: Sequence[str] | None) -> int:
        """Put dead letters back into the group's stream."""
        return _store(transport).replay(
            self._keys.dead_letter_stream(group),
            self._keys.group_stream(group),
            ids,
            self._timeout,
        )

    def purge(self, transport: Transport, group: str) -> int:
        """Delete a group's dead letters."""
        return _store(transport).purge(self._keys.dead_letter_stream(group), self._timeout)


def _store(transport: Transport) -> GroupStore:
    """The transport's stream operations.

    Raises:
        BusStateError: the transport has none.
    """
    store = transport.groups
    if store is None:
        raise BusStateError(f"the {transport.name} transport does not support durable groups")
    return store
