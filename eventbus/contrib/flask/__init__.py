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

Built on the public API of :mod:`eventbus`, and on the bus's own check of a
subscription's arguments (the extension checks its handlers before any bus exists).
The per-app state is in :mod:`eventbus.contrib.flask._state`, the commands in
:mod:`eventbus.contrib.flask._cli`. Needs Flask (the ``flask`` extra:
``pip install "shared-infra-event-bus[flask]"``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from werkzeug.local import LocalProxy

from eventbus import (
    BusStateError,
    ConfigurationError,
    Event,
    EventBus,
    EventBusConfig,
    GroupOptions,
)
from eventbus._core.options import SubscribeOptions
from eventbus.contrib._settings import bus_class_setting, is_recording
from eventbus.contrib.flask._state import EXTENSION_KEY as _KEY
from eventbus.contrib.flask._state import (
    ErrorHook,
    EventBusState,
    live_states,
    state_of,
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

EXTENSION_KEY = _KEY
"""The key of :class:`EventBusState` in ``app.extensions``."""

log = logging.getLogger("eventbus.contrib.flask")

H = TypeVar("H", bound=Callable[..., Any])

# Keys of the extension itself (after EVENTBUS_), not of the bus's configuration.
_EXTENSION_KEYS = ("CONFIG", "HANDLERS", "BUS_CLASS")
_SERVICE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


# -- configuration -------------------------------------------------------------------------


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

    ``config`` is usually ``app.config``. Each key sets the config field of the same
    name (``EVENTBUS_PUBLISH_TIMEOUT`` -> ``publish_timeout``), as
    :meth:`EventBusConfig.from_mapping <eventbus.EventBusConfig.from_mapping>` with
    ``prefix="EVENTBUS_"`` reads them: ``EVENTBUS_URL`` picks the transport,
    ``EVENTBUS_KEY_PREFIX`` sets a Redis URL's key prefix, ``EVENTBUS_REDIS`` (a
    :class:`~eventbus.RedisConfig`) and ``EVENTBUS_PERFORMANCE`` take configs or dicts,
    and string values are read as numbers where the field is a number, so
    ``app.config.from_prefixed_env()`` and plain environment strings both work.
    ``EVENTBUS_CONFIG`` (a whole ``EventBusConfig``) replaces every other key.
    ``EVENTBUS_HANDLERS`` and ``EVENTBUS_BUS_CLASS`` are the extension's and ignored
    here.

    Example::

        config_from_mapping({"EVENTBUS_URL": "memory://"}, default_service_name="web")

    Raises:
        ConfigurationError: an unknown ``EVENTBUS_*`` key, or an invalid value.
    """
    whole = config.get("EVENTBUS_CONFIG")
    if whole is None:
        return EventBusConfig.from_mapping(
            config,
            prefix="EVENTBUS_",
            ignore=_EXTENSION_KEYS,
            default_service_name=default_service_name,
        )
    if not isinstance(whole, EventBusConfig):
        raise ConfigurationError(f"EVENTBUS_CONFIG: must be an EventBusConfig, got {whole!r}")
    others = sorted(
        key
        for key in config
        if isinstance(key, str)
        and key.startswith("EVENTBUS_")
        and key.removeprefix("EVENTBUS_") not in _EXTENSION_KEYS
    )
    if others:
        raise ConfigurationError(
            f"EVENTBUS_CONFIG is given: it replaces {', '.join(others)}; set one or the other"
        )
    return whole


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
        self._registrations: list[SubscribeOptions] = []
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
        bus_class = bus_class_setting(
            app.config.get("EVENTBUS_BUS_CLASS", EventBus), key="EVENTBUS_BUS_CLASS"
        )
        if config.transport_url.startswith("memory:") and not is_recording(bus_class):
            log.info(
                "app %r: the event bus uses %s, this process's own broker (set EVENTBUS_URL "
                "to reach other processes)",
                app.name,
                config.transport_url,
            )
        app.extensions[EXTENSION_KEY] = EventBusState(
            self, app, config, handlers=handlers, bus_class=bus_class
        )
        from eventbus.contrib.flask._cli import cli_group  # click and the CLI: only now

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
        registration = SubscribeOptions.from_keywords(pattern, handler, options)
        with self._lock:
            self._registrations.append(registration)
        for state in live_states():
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
        return state_of(app)

    def get_bus(self, app: Flask | None = None) -> EventBus:
        """The connected bus of ``app`` (default: the current app); connects on first use.

        Raises:
            BusStateError: no app context and no ``app``, or the extension is not
                initialised on the app.
            TransportConnectionError: the server cannot be reached.
        """
        return state_of(app).bus

    def close(self, app: Flask | None = None, timeout: float | None = None) -> None:
        """Disconnect the bus of ``app`` (default: the current app) in this process.

        Flushes and drains as :meth:`EventBus.disconnect` does; the next use makes a
        new bus. Buses are also closed at interpreter exit.
        """
        state_of(app).close(timeout)


def _current_bus() -> EventBus:
    return state_of(None).bus


current_bus = cast("EventBus", LocalProxy(_current_bus))
"""The current app's :class:`~eventbus.EventBus`, connected on first access.

Outside an app context it raises :class:`~eventbus.BusStateError` (a
:class:`RuntimeError`), as ``current_app`` does.
"""
