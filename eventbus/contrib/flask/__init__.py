"""Flask integration: ``EventBusExtension``, the ``current_bus`` proxy, ``flask eventbus``.

Example::

    from flask import Flask
    from eventbus.contrib.flask import EventBusExtension, current_bus

    events = EventBusExtension()


    @events.on("photo.uploaded")
    def on_uploaded(event): ...  # runs on a handler thread, inside the app context


    def create_app():
        app = Flask(__name__)
        app.config["EVENTBUS_URL"] = "redis://localhost:6379/0"
        events.init_app(app)

        @app.post("/photos/<photo_id>")
        def upload(photo_id):
            current_bus.publish("photo.uploaded", {"photoId": photo_id})
            return "", 202

        return app

``init_app`` reads and checks the ``EVENTBUS_*`` keys of ``app.config`` (no I/O); each
process makes and connects its app's bus on first use, so a pre-forking server
(``gunicorn --preload``) never shares a connection between workers. The bus is
disconnected at interpreter exit, or by :meth:`EventBusExtension.close`.

Built only on the public API of :mod:`eventbus`. Needs Flask (the ``flask`` extra:
``pip install "shared-infra-event-bus[flask]"``).
"""

from __future__ import annotations

import atexit
import difflib
import functools
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
from flask import current_app, has_app_context
from werkzeug.local import LocalProxy
from werkzeug.utils import import_string

from eventbus import (
    BusClosedError,
    BusStateError,
    ConfigurationError,
    Event,
    EventBus,
    EventBusConfig,
    EventBusError,
    GroupOptions,
    PerformanceConfig,
    RedisConfig,
    Subscription,
    ValidationError,
)

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "EXTENSION_KEY",
    "EventBusExtension",
    "EventBusState",
    "config_from_mapping",
    "current_bus",
]

EXTENSION_KEY = "eventbus"
"""The key of :class:`EventBusState` in ``app.extensions``."""

log = logging.getLogger("eventbus.contrib.flask")

H = TypeVar("H", bound=Callable[..., Any])
ErrorHook = Callable[[EventBusError, "Event | None"], Any]

# app.config key -> (EventBusConfig field, how a string value is read)
_FLOATS = (
    "publish_timeout",
    "operation_timeout",
    "block_timeout",
    "presence_ttl",
    "heartbeat_interval",
    "shutdown_timeout",
)
_INTS = ("max_event_size", "handler_threads", "queue_size")
_STRINGS = ("log_level", "overflow")
_FIELD_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    **{f"EVENTBUS_{name.upper()}": (name, float) for name in _FLOATS},
    **{f"EVENTBUS_{name.upper()}": (name, int) for name in _INTS},
    **{f"EVENTBUS_{name.upper()}": (name, str) for name in _STRINGS},
}
_OWN_KEYS = (
    "EVENTBUS_URL",
    "EVENTBUS_SERVICE_NAME",
    "EVENTBUS_KEY_PREFIX",
    "EVENTBUS_REDIS",
    "EVENTBUS_PERFORMANCE",
    "EVENTBUS_CONFIG",
    "EVENTBUS_HANDLERS",
    "EVENTBUS_BUS_CLASS",
)
# Keys of the extension itself, not of the bus's configuration.
_EXTENSION_KEYS = frozenset({"EVENTBUS_CONFIG", "EVENTBUS_HANDLERS", "EVENTBUS_BUS_CLASS"})
_KNOWN_KEYS = frozenset(_FIELD_KEYS) | frozenset(_OWN_KEYS)
_SERVICE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


# -- configuration -------------------------------------------------------------------------


def _read(kind: Callable[[str], Any], key: str, value: object) -> Any:
    """``value`` as ``kind`` when it is a string (from the environment), else as is."""
    if not isinstance(value, str) or kind is str:
        return value
    try:
        return kind(value.strip())
    except ValueError:
        raise ConfigurationError(f"{key}: cannot read {value!r} as {kind.__name__}") from None


def _read_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{key}: must be a bool, got {value!r}")


def _default_service_name(name: str) -> str:
    return _SERVICE_CHARS.sub("-", name)[:100] or "flask"


def config_from_mapping(config: Mapping[str, Any], *, default_service_name: str) -> EventBusConfig:
    """Build an :class:`~eventbus.EventBusConfig` from the ``EVENTBUS_*`` keys of ``config``.

    ``config`` is usually ``app.config``. ``EVENTBUS_URL``, ``EVENTBUS_KEY_PREFIX`` and
    the service name go through :meth:`EventBusConfig.from_env` (the same rules as the
    environment); the other keys set the config field of the same name
    (``EVENTBUS_PUBLISH_TIMEOUT`` -> ``publish_timeout``). String values are read as
    numbers where the field is a number, so ``app.config.from_prefixed_env()`` and
    plain environment strings both work. ``EVENTBUS_CONFIG`` (a whole
    ``EventBusConfig``) replaces every other key. ``EVENTBUS_HANDLERS`` and
    ``EVENTBUS_BUS_CLASS`` are the extension's and ignored here.

    Example::

        config_from_mapping({"EVENTBUS_URL": "memory://"}, default_service_name="web")

    Raises:
        ConfigurationError: an unknown ``EVENTBUS_*`` key, or an invalid value.
    """
    keys = {key for key in config if isinstance(key, str) and key.startswith("EVENTBUS_")}
    unknown = sorted(keys - _KNOWN_KEYS)
    if unknown:
        hints = [
            f"{key} (did you mean {close[0]}?)" if close else key
            for key in unknown
            for close in [difflib.get_close_matches(key, sorted(_KNOWN_KEYS), n=1)]
        ]
        raise ConfigurationError(
            f"app.config: unknown key(s) {', '.join(hints)}; known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    whole = config.get("EVENTBUS_CONFIG")
    if whole is not None:
        if not isinstance(whole, EventBusConfig):
            raise ConfigurationError(f"EVENTBUS_CONFIG: must be an EventBusConfig, got {whole!r}")
        others = sorted(keys - _EXTENSION_KEYS)
        if others:
            raise ConfigurationError(
                f"EVENTBUS_CONFIG is given: it replaces {', '.join(others)}; set one or the other"
            )
        return whole

    environ: dict[str, str] = {}
    options: dict[str, Any] = {}
    url = config.get("EVENTBUS_URL")
    redis = config.get("EVENTBUS_REDIS")
    prefix = config.get("EVENTBUS_KEY_PREFIX")
    if url is not None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"EVENTBUS_URL: must be a non-empty string, got {url!r}")
        if redis is not None:
            raise ConfigurationError("EVENTBUS_URL and EVENTBUS_REDIS are both set; set one")
        environ["EVENTBUS_URL"] = url
    if prefix is not None:
        if not isinstance(prefix, str):
            raise ConfigurationError(f"EVENTBUS_KEY_PREFIX: must be a string, got {prefix!r}")
        environ["EVENTBUS_KEY_PREFIX"] = prefix
    if redis is not None:
        if not isinstance(redis, RedisConfig):
            raise ConfigurationError(f"EVENTBUS_REDIS: must be a RedisConfig, got {redis!r}")
        options["redis"] = redis if prefix is None else attrs.evolve(redis, key_prefix=prefix)
    name = config.get("EVENTBUS_SERVICE_NAME")
    options["service_name"] = default_service_name if name is None else name
    performance = config.get("EVENTBUS_PERFORMANCE")
    if isinstance(performance, Mapping):
        try:
            performance = PerformanceConfig(**performance)
        except TypeError as exc:
            raise ConfigurationError(f"EVENTBUS_PERFORMANCE: {exc}") from None
    if performance is not None:
        options["performance"] = performance
    for key, (field, kind) in _FIELD_KEYS.items():
        if key in config:
            options[field] = _read(kind, key, config[key])
    return EventBusConfig.from_env(environ, **options)


def _bus_class(value: object) -> type[EventBus]:
    """The class ``EVENTBUS_BUS_CLASS`` names: an :class:`~eventbus.EventBus` subclass,
    given as the class or as its import path (``"eventbus.testing.RecordingBus"``)."""
    key = "EVENTBUS_BUS_CLASS"
    if isinstance(value, str):
        try:
            value = import_string(value.strip())
        except ImportError as exc:
            raise ConfigurationError(f"{key}: cannot import {value!r}: {exc}") from exc
    if not (isinstance(value, type) and issubclass(value, EventBus)):
        raise ConfigurationError(
            f"{key}: must be EventBus or a subclass (or its import path, such as "
            f"'eventbus.testing.RecordingBus'), got {value!r}"
        )
    return value


def _records(bus_class: type[EventBus]) -> bool:
    """Whether ``bus_class`` is a recording bus for tests (no transport at all)."""
    if bus_class is EventBus:
        return False
    from eventbus.testing import RecordingBus  # stdlib-only; loaded only for other classes

    return issubclass(bus_class, RecordingBus)


# -- per-app state -------------------------------------------------------------------------


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


class _Registration:
    """A handler registered on the extension, subscribed on every bus it makes."""

    __slots__ = ("handler", "options", "pattern")

    def __init__(self, pattern: str, handler: Callable[[Event], Any], options: dict[str, Any]):
        self.pattern = pattern
        self.handler = handler
        self.options = options


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
        extension: EventBusExtension,
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

    def _make_bus(self, *, handlers: bool) -> tuple[EventBus, list[_Registration]]:
        bus = self.bus_class(self.config)
        for hook in list(self.extension._error_hooks):
            bus.on_error(hook)
        registrations = list(self.extension._registrations) if handlers else []
        for registration in registrations:
            self._subscribe(bus, registration)
        return bus, registrations

    def _subscribe(self, bus: EventBus, registration: _Registration) -> Subscription:
        handler = _in_app_context(self._app, registration.handler)
        return bus.subscribe(registration.pattern, handler, **registration.options)

    def _attach(self, registration: _Registration) -> None:
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


def _in_app_context(app: Flask, handler: Callable[[Event], Any]) -> Callable[[Event], Any]:
    @functools.wraps(handler)
    def run_in_app_context(event: Event) -> Any:
        with app.app_context():
            return handler(event)

    return run_in_app_context


# -- the extension -------------------------------------------------------------------------


class EventBusExtension:
    """The Flask extension: one bus per app and process, configured from ``app.config``.

    Example::

        events = EventBusExtension()  # module level, no app yet


        @events.on("photo.*", group="thumbnails")
        def make_thumbnail(event): ...


        def create_app():
            app = Flask(__name__)
            app.config.from_prefixed_env()  # FLASK_EVENTBUS_URL=redis://...
            events.init_app(app)
            return app

    The extension never stores an app: its handlers are subscribed on the bus of
    every app it is initialised on. Use ``current_bus`` (or :meth:`get_bus`) to
    publish.

    Args:
        app: an app to initialise now (``EventBusExtension(app)``); or call
            :meth:`init_app` later, once per app.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._registrations: list[_Registration] = []
        self._error_hooks: list[ErrorHook] = []
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check the app's ``EVENTBUS_*`` config and register the state and the CLI.

        No I/O and no threads: the bus is made and connected on first use, in each
        process. Adds the ``flask eventbus`` command group to ``app.cli``.

        ``EVENTBUS_BUS_CLASS`` picks the class of the app's buses: in tests,
        ``"eventbus.testing.RecordingBus"`` records what the app publishes and runs
        the extension's handlers on ``drain()``, with no server::

            app.config["EVENTBUS_BUS_CLASS"] = "eventbus.testing.RecordingBus"

        Raises:
            ConfigurationError: a key is unknown or a value invalid (also a
                ``EVENTBUS_BUS_CLASS`` that cannot be imported or is not an
                :class:`~eventbus.EventBus` subclass).
            BusStateError: the app already has an event bus extension.
        """
        if EXTENSION_KEY in app.extensions:
            raise BusStateError(
                f"app {app.name!r} already has an event bus extension "
                f"(app.extensions[{EXTENSION_KEY!r}]); call init_app once per app"
            )
        config = config_from_mapping(
            app.config, default_service_name=_default_service_name(app.name)
        )
        handlers = _read_bool("EVENTBUS_HANDLERS", app.config.get("EVENTBUS_HANDLERS", True))
        bus_class = _bus_class(app.config.get("EVENTBUS_BUS_CLASS", EventBus))
        if config.transport_url.startswith("memory:") and not _records(bus_class):
            log.info(
                "app %r: the event bus uses %s, this process's own broker (set EVENTBUS_URL "
                "to reach other processes)",
                app.name,
                config.transport_url,
            )
        app.extensions[EXTENSION_KEY] = EventBusState(
            self, app, config, handlers=handlers, bus_class=bus_class
        )
        from eventbus.contrib.flask._cli import cli_group

        app.cli.add_command(cli_group())

    # -- handlers ----------------------------------------------------------------------

    def subscribe(
        self, pattern: str, handler: Callable[[Event], Any], **options: Any
    ) -> Callable[[Event], Any]:
        """Run ``handler`` for events matching ``pattern`` on every app's bus.

        Options are those of :meth:`EventBus.subscribe` (``group``, ``filter``,
        ``retry_on_error``, ...), checked now. The handler runs on a handler thread
        inside the app context of the app whose bus got the event, so
        ``current_app`` and ``current_bus`` work in it. Usable before any app
        exists; a handler added after an app's bus connected is subscribed on it
        at once.

        Returns:
            ``handler``.

        Raises:
            InvalidPatternError, InvalidFilterError, ValidationError: bad arguments.
        """
        _check_subscription(pattern, handler, options)
        registration = _Registration(pattern, handler, dict(options))
        with self._lock:
            self._registrations.append(registration)
        for state in list(_states):
            if state.extension is self:
                state._attach(registration)
        return handler

    def on(
        self,
        pattern: str,
        *,
        retry_on_error: bool = False,
        max_retries: int | None = None,
        timeout: float | None = None,
        filter: Mapping[str, Any] | Callable[[Event], bool] | None = None,  # noqa: A002
        concurrency: int = 1,
        group: str | None = None,
        group_options: GroupOptions | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`subscribe`, with the options of :meth:`EventBus.on`.

        Example::

            @events.on("photo.processing.*", retry_on_error=True)
            def on_processing(event: Event) -> None:
                current_app.logger.info("progress %s", event.data)
        """

        def decorate(handler: H) -> H:
            self.subscribe(
                pattern,
                handler,
                retry_on_error=retry_on_error,
                max_retries=max_retries,
                timeout=timeout,
                filter=filter,
                concurrency=concurrency,
                group=group,
                group_options=group_options,
            )
            return handler

        return decorate

    def on_error(self, hook: ErrorHook) -> ErrorHook:
        """Add an error hook (see :meth:`EventBus.on_error`) to every bus made from now on.

        Usable as a decorator; register hooks before the buses are first used.
        """
        self._error_hooks.append(hook)
        return hook

    # -- buses -------------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> EventBusState:
        """The :class:`EventBusState` of ``app`` (default: the current app).

        Raises:
            BusStateError: no app context and no ``app``, or the extension is not
                initialised on the app.
        """
        return _state_of(app)

    def get_bus(self, app: Flask | None = None) -> EventBus:
        """The connected bus of ``app`` (default: the current app); connects on first use.

        Raises:
            BusStateError: no app context and no ``app``, or the extension is not
                initialised on the app.
            TransportConnectionError: the server cannot be reached.
        """
        return _state_of(app).bus

    def close(self, app: Flask | None = None, timeout: float | None = None) -> None:
        """Disconnect the bus of ``app`` (default: the current app) in this process.

        Flushes and drains as :meth:`EventBus.disconnect` does; the next use makes a
        new bus. Buses are also closed at interpreter exit.
        """
        _state_of(app).close(timeout)


def _check_subscription(pattern: str, handler: Callable[[Event], Any], options: Any) -> None:
    """Check a subscription's arguments now, with the bus's own rules, without any I/O."""
    probe = EventBus(EventBusConfig(service_name="flask-check", url="memory://"))
    try:
        probe.subscribe(pattern, handler, **options)
    except TypeError as exc:
        raise ValidationError(f"subscribe: {exc}") from None
    finally:
        probe.disconnect(0)  # never connected: no I/O, no threads


def _state_of(app: Flask | None) -> EventBusState:
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


def _current_bus() -> EventBus:
    return _state_of(None).bus


current_bus = cast("EventBus", LocalProxy(_current_bus))
"""The current app's :class:`~eventbus.EventBus`, connected on first access.

Outside an app context it raises :class:`~eventbus.BusStateError` (a
:class:`RuntimeError`), as ``current_app`` does.
"""
