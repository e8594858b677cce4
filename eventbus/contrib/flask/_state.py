"""The per-app state of :mod:`eventbus.contrib.flask`: :class:`EventBusState`.

What ``init_app`` stores in ``app.extensions["eventbus"]``, and :func:`state_of`, which
finds it for the extension, ``current_bus`` and the ``flask eventbus`` commands. Every
state is closed at interpreter exit; a forked child gets fresh locks.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from flask import current_app, has_app_context

from eventbus import (
    BusClosedError,
    BusStateError,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    Subscription,
)
from eventbus._core.options import SubscribeOptions

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["EXTENSION_KEY", "ErrorHook", "EventBusState", "live_states", "state_of"]

EXTENSION_KEY = "eventbus"
"""The key of :class:`EventBusState` in ``app.extensions``."""

log = logging.getLogger("eventbus.contrib.flask")

ErrorHook = Callable[[EventBusError, "Event | None"], Any]


class Extension(Protocol):
    """What a state uses of the :class:`~eventbus.contrib.flask.EventBusExtension` that
    made it: the handlers and error hooks registered on it."""

    _registrations: list[SubscribeOptions]
    _error_hooks: list[ErrorHook]


_states: weakref.WeakSet[EventBusState] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by another thread at fork() would stay held forever in the child.
    for state in list(_states):
        state._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _close_all() -> None:
    """Disconnect every bus the extension made in this process (interpreter exit)."""
    for state in list(_states):
        try:
            state.close()
        except Exception:
            log.exception("closing the event bus of app %r at exit failed", state.app_name)


class EventBusState:
    """What :meth:`EventBusExtension.init_app` stores in ``app.extensions["eventbus"]``.

    It holds the app's checked :class:`~eventbus.EventBusConfig` and, once something
    used it in this process, the app's connected :class:`~eventbus.EventBus`.
    Get the bus with :attr:`bus` (connects on first access), ``current_bus``, or
    :meth:`EventBusExtension.get_bus`.

    Attributes:
        extension: the extension that made this state.
        config: the app's bus configuration.
        handlers: whether the extension's handlers are subscribed on :attr:`bus`
            (``EVENTBUS_HANDLERS``).
        bus_class: the class the app's buses are made with (``EVENTBUS_BUS_CLASS``,
            default :class:`~eventbus.EventBus`), called as ``bus_class(config)``.
        app_name: the app's name, for messages.
    """

    def __init__(
        self,
        extension: Extension,
        app: Flask,
        config: EventBusConfig,
        *,
        handlers: bool,
        bus_class: type[EventBus] = EventBus,
    ) -> None:
        self.extension = extension
        self.config = config
        self.handlers = handlers
        self.bus_class = bus_class
        self.app_name: str = app.name
        # The app, for the app context its handlers run in; the app holds this state.
        self._app = app
        self._lock = threading.Lock()
        self._bus: EventBus | None = None
        self._attached: set[int] = set()  # ids of the registrations subscribed on _bus
        _states.add(self)

    @property
    def bus(self) -> EventBus:
        """The app's bus, made and connected on first access in this process.

        Thread-safe: concurrent first requests connect it once. In a forked child
        (gunicorn worker), a bus the parent had connected reconnects with a
        connection of its own; one it never made is made here.

        Raises:
            TransportConnectionError: the server cannot be reached (the next access
                tries again).
        """
        bus = self._bus
        if bus is not None and bus.is_connected():
            return bus
        with self._lock:
            bus = self._bus
            if bus is not None:
                try:
                    bus.connect()  # no-op if connected; a forked child's own connection
                    return bus
                except BusClosedError:
                    self._bus = None  # closed behind our back: make a fresh one
            bus, attached = self._make_bus(handlers=self.handlers)
            bus.connect()  # a failure leaves nothing behind: the next access retries
            self._bus, self._attached = bus, {id(r) for r in attached}
            return bus

    def is_connected(self) -> bool:
        """True if the app's bus is connected in this process (no I/O, never connects)."""
        bus = self._bus
        return bus is not None and bus.is_connected()

    def new_bus(self, *, handlers: bool = False) -> EventBus:
        """A new, unconnected bus with the app's config; the caller connects and closes it.

        With ``handlers``, the extension's handlers and error hooks are subscribed on
        it (running in the app context). The ``flask eventbus`` commands use such a
        bus, apart from the app's own.
        """
        return self._make_bus(handlers=handlers)[0]

    def _make_bus(self, *, handlers: bool) -> tuple[EventBus, list[SubscribeOptions]]:
        bus = self.bus_class(self.config)
        for hook in list(self.extension._error_hooks):
            bus.on_error(hook)
        registrations = list(self.extension._registrations) if handlers else []
        for registration in registrations:
            self._subscribe(bus, registration)
        return bus, registrations

    def _subscribe(self, bus: EventBus, registration: SubscribeOptions) -> Subscription:
        handler = in_app_context(self._app, registration.handler)
        return bus.subscribe(registration.pattern, handler, **registration.keywords())

    def _attach(self, registration: SubscribeOptions) -> None:
        """Subscribe a handler registered after this state's bus was made."""
        with self._lock:
            if self._bus is not None and self.handlers and id(registration) not in self._attached:
                self._subscribe(self._bus, registration)
                self._attached.add(id(registration))

    def close(self, timeout: float | None = None) -> None:
        """Disconnect the app's bus in this process; the next use makes a new one.

        ``timeout`` as in :meth:`EventBus.disconnect`. Does nothing if the bus was
        never used.
        """
        with self._lock:
            bus, self._bus = self._bus, None
            self._attached = set()
        if bus is not None:
            bus.disconnect(timeout)

    def __repr__(self) -> str:
        state = "connected" if self.is_connected() else "not connected"
        kind = "" if self.bus_class is EventBus else f" {self.bus_class.__name__}"
        return f"<EventBusState app={self.app_name!r}{kind} {self.config.transport_url} {state}>"


def in_app_context(app: Flask, handler: Callable[[Event], Any]) -> Callable[[Event], Any]:
    """``handler``, run inside ``app``'s app context."""

    @functools.wraps(handler)
    def run_in_app_context(event: Event) -> Any:
        with app.app_context():
            return handler(event)

    return run_in_app_context


def live_states() -> list[EventBusState]:
    """Every state alive in this process (of every app and extension)."""
    return list(_states)


def state_of(app: Flask | None) -> EventBusState:
    """The state of ``app``, or of the current app when ``app`` is None.

    Raises:
        BusStateError: no app context and no ``app``, or the extension is not
            initialised on the app.
    """
    if app is None:
        if not has_app_context():
            raise BusStateError(
                "Working outside of application context: the event bus of the current app "
                "needs one. Use `with app.app_context():`, or pass the app "
                "(`extension.get_bus(app)`)."
            )
        app = current_app
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, EventBusState):
        raise BusStateError(
            f"the app {app.name!r} has no event bus: call EventBusExtension().init_app(app)"
        )
    return state
