"""The project's bus: built from ``settings.EVENTBUS``, connected on first use.

One :class:`DjangoEventBus` per process, like Django's own database connections and
caches: :func:`get_bus` builds it on first call (no I/O), the first publish connects
it (so ``runserver``'s reloader, a pre-forking server's master and management commands
that never publish stay unconnected), and a change of ``settings.EVENTBUS`` (as
``override_settings`` makes in tests) replaces it.

Handlers written with ``@bus.on(...)`` in an app's ``events.py`` are *declared*: they
run in the process that starts them, ``manage.py eventbus_worker``, or in every
process when ``EVENTBUS["HANDLE_IN_PROCESS"]`` is True. A web process only publishes.

``EVENTBUS["BUS_CLASS"] = "eventbus.testing.RecordingBus"`` (in tests) makes the
project's bus a :class:`DjangoRecordingBus`, both a :class:`DjangoEventBus` and a
:class:`~eventbus.testing.RecordingBus`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar, cast

import attrs
from django.conf import ENVIRONMENT_VARIABLE, settings
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

from eventbus import (
    Event,
    EventBus,
    EventBusConfig,
    GroupOptions,
    HealthCheckResult,
    PublishResult,
    Subscription,
)
from eventbus._core.options import SubscribeOptions
from eventbus.contrib.django.conf import DjangoSettings, read_settings
from eventbus.testing import RecordingBus

__all__ = [
    "DeclaredHandler",
    "DjangoEventBus",
    "DjangoRecordingBus",
    "bus",
    "get_bus",
    "project_bus_class",
    "project_settings",
    "reset_bus",
    "start_handlers",
]

log = logging.getLogger("eventbus.contrib.django")

H = TypeVar("H", bound=Callable[..., Any])


def _read_only(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(options))


@attrs.frozen(kw_only=True)
class DeclaredHandler:
    """A handler declared with ``@bus.on(...)``, e.g. in an app's ``events.py``.

    Its arguments are checked on construction, by the rules of
    :meth:`EventBus.subscribe <eventbus.EventBus.subscribe>`: a bad pattern or filter
    fails while ``events.py`` is imported, in every process, not only where handlers
    run.

    Attributes:
        pattern: the glob pattern on event types.
        handler: the function, as written (undecorated).
        options: the keyword options given to ``on`` (``group``, ``retry_on_error``...).

    Raises:
        InvalidPatternError, InvalidFilterError, ValidationError: bad arguments.
    """

    pattern: str
    handler: Callable[[Event], Any]
    options: Mapping[str, Any] = attrs.field(converter=_read_only)

    def __attrs_post_init__(self) -> None:
        SubscribeOptions.from_keywords(self.pattern, self.handler, self.options)

    @property
    def group(self) -> str | None:
        """The durable group it consumes, or None for fan-out."""
        group = self.options.get("group")
        return group if isinstance(group, str) else None

    @property
    def name(self) -> str:
        """``module.function``, for logs."""
        module = getattr(self.handler, "__module__", None) or "?"
        qualname = getattr(self.handler, "__qualname__", None) or repr(self.handler)
        return f"{module}.{qualname}"

    def describe(self) -> str:
        """One line for logs: ``'photo.*' -> photos.events.on_photo (group thumbs)``."""
        group = f" (group {self.group})" if self.group else ""
        return f"{self.pattern!r} -> {self.name}{group}"


def _with_django_connections(handler: Callable[[Event], Any]) -> Callable[[Event], Any]:
    """Run ``handler`` as Django runs a request: stale DB connections closed around it.

    Handler threads live long; without this a connection the database dropped (or one
    past ``CONN_MAX_AGE``) would break every later handler on that thread.
    """

    @functools.wraps(handler)
    def run(event: Event) -> Any:
        close_old_connections()
        try:
            return handler(event)
        finally:
            close_old_connections()

    return run


class _Registry:
    """The handlers declared in this process (they outlive a replaced bus)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.handlers: list[DeclaredHandler] = []


_registry = _Registry()


class DjangoEventBus(EventBus):
    """The project's :class:`~eventbus.EventBus`: connects on first use, declares handlers.

    Get it with :func:`get_bus` or the ``bus`` proxy; it is an ordinary
    :class:`~eventbus.EventBus` but for two things:

    - :meth:`publish`, :meth:`publish_to_room`, :meth:`publish_to_user`,
      :meth:`broadcast`, :meth:`get_room_members` and :meth:`health_check` connect
      the bus first if it is not connected (once per process; a forked child
      reconnects on its own);
    - :meth:`on` *declares* a handler: it is checked at once (a bad pattern or
      filter raises while ``events.py`` is imported, in every process) and subscribed
      only where handlers run (:meth:`start_handlers`: the ``eventbus_worker``
      command, or every process with ``EVENTBUS["HANDLE_IN_PROCESS"]``).
      :meth:`subscribe` keeps its usual meaning: a live subscription in this process.

    Declarations belong to the process, not to one bus: a bus that replaces the
    project's bus (after a change of the setting) runs the same handlers.

    With ``EVENTBUS["BUS_CLASS"]`` set to :class:`~eventbus.testing.RecordingBus`, the
    project's bus is a :class:`DjangoRecordingBus`: it publishes, records and runs
    handlers as a recording bus does, with the two behaviours above on top.

    Example::

        from eventbus.contrib.django import bus


        @bus.on("photo.uploaded", group="thumbnails")
        def make_thumbnail(event): ...

    Args:
        config: the bus's configuration.
        start_handlers: subscribe the declared handlers now (and those declared later).
    """

    def __init__(self, config: EventBusConfig, *, start_handlers: bool = False) -> None:
        super().__init__(config)
        self._handling = False
        self._started: dict[int, Subscription] = {}  # id(declared handler) -> live one
        if start_handlers:
            self.start_handlers()

    # -- declared handlers ------------------------------------------------------------

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
        """Declare a handler, with the options of :meth:`~eventbus.EventBus.subscribe`.

        The handler runs where handlers run (see :meth:`start_handlers`), each call
        between two ``close_old_connections()`` as in a request (not on a recording
        bus, whose handlers run in the test's own thread). Its arguments are checked
        now.

        Raises:
            InvalidPatternError, InvalidFilterError, ValidationError: bad arguments.
        """
        options: dict[str, Any] = {
            "retry_on_error": retry_on_error,
            "max_retries": max_retries,
            "timeout": timeout,
            "filter": filter,
            "concurrency": concurrency,
            "group": group,
            "group_options": group_options,
        }

        def decorate(handler: H) -> H:
            self._declare(DeclaredHandler(pattern=pattern, handler=handler, options=options))
            return handler

        return decorate

    def _declare(self, declared: DeclaredHandler) -> None:
        with _registry.lock:
            if self._handling:
                self._start(declared)
            _registry.handlers.append(declared)

    def _start(self, declared: DeclaredHandler) -> Subscription:
        handler = declared.handler
        # A recording bus runs handlers in the thread that drains it, which owns its
        # database connection: they must not close it as a handler thread's is closed.
        if not isinstance(self, RecordingBus):
            handler = _with_django_connections(handler)
        sub = self.subscribe(declared.pattern, handler, **declared.options)
        self._started[id(declared)] = sub
        return sub

    @property
    def declared_handlers(self) -> tuple[DeclaredHandler, ...]:
        """Every handler declared with :meth:`on` in this process, in order."""
        with _registry.lock:
            return tuple(_registry.handlers)

    @property
    def handling(self) -> bool:
        """Whether the declared handlers are subscribed on this bus (see :meth:`start_handlers`)."""
        return self._handling

    def start_handlers(self) -> list[Subscription]:
        """Subscribe every declared handler on this bus, and those declared later.

        They receive events once the bus is connected. Returns the new subscriptions.

        Raises:
            TransportError: the bus is connected and the server did not confirm.
        """
        started: list[Subscription] = []
        with _registry.lock:
            self._handling = True
            for declared in _registry.handlers:
                if id(declared) not in self._started:
                    started.append(self._start(declared))
        return started

    # -- connect on first use ------------------------------------------------------------

    def connect(self) -> None:
        """:meth:`EventBus.connect <eventbus.EventBus.connect>`; also disconnects the bus
        (flushing batched publishes) when the process exits normally."""
        super().connect()
        _register_exit_hook()

    def _ensure_connected(self) -> None:
        if not self.is_connected():
            self.connect()

    def publish(
        self,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """:meth:`EventBus.publish <eventbus.EventBus.publish>`, connecting first if needed.

        Raises:
            TransportConnectionError: the first connection failed.
        """
        self._ensure_connected()
        return super().publish(
            event_type, data, headers=headers, event_id=event_id, timeout=timeout
        )

    def publish_to_room(
        self,
        room: str,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """:meth:`EventBus.publish_to_room <eventbus.EventBus.publish_to_room>`, connecting
        first if needed."""
        self._ensure_connected()
        return super().publish_to_room(
            room, event_type, data, headers=headers, event_id=event_id, timeout=timeout
        )

    def publish_to_user(
        self,
        user_id: str,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """:meth:`EventBus.publish_to_user <eventbus.EventBus.publish_to_user>`, connecting
        first if needed."""
        self._ensure_connected()
        return super().publish_to_user(
            user_id, event_type, data, headers=headers, event_id=event_id, timeout=timeout
        )

    def broadcast(
        self,
        event_type: str,
        data: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
    ) -> PublishResult:
        """:meth:`EventBus.broadcast <eventbus.EventBus.broadcast>`, connecting first if
        needed."""
        self._ensure_connected()
        return super().broadcast(
            event_type, data, headers=headers, event_id=event_id, timeout=timeout
        )

    def get_room_members(self, room: str) -> list[str]:
        """:meth:`EventBus.get_room_members <eventbus.EventBus.get_room_members>`,
        connecting first if needed."""
        self._ensure_connected()
        return super().get_room_members(room)

    def health_check(self) -> HealthCheckResult:
        """:meth:`EventBus.health_check <eventbus.EventBus.health_check>`, connecting
        first if needed; never raises (a failed connection is ``unhealthy``)."""
        try:
            self._ensure_connected()
        except Exception:  # reported as the result: health_check never raises
            log.debug("health_check: cannot connect", exc_info=True)
        return super().health_check()


# -- the project's bus ---------------------------------------------------------------------


class DjangoRecordingBus(DjangoEventBus, RecordingBus):
    """The project's bus in tests: a :class:`DjangoEventBus` that is a
    :class:`~eventbus.testing.RecordingBus`.

    What ``EVENTBUS["BUS_CLASS"] = "eventbus.testing.RecordingBus"`` gives: it connects
    on first use and declares ``@bus.on`` handlers as a :class:`DjangoEventBus`,
    records what is published and runs the handlers on ``drain()``, in the test's
    thread and transaction, as a recording bus.

    Example::

        get_bus().assert_published("photo.uploaded", where={"photoId": 7})
        get_bus().drain()  # the events.py handlers run here
    """


def project_bus_class(bus_class: type[EventBus] = EventBus) -> type[DjangoEventBus]:
    """The class of the project's bus for ``EVENTBUS["BUS_CLASS"] = bus_class``.

    :class:`DjangoEventBus` for :class:`~eventbus.EventBus`, :class:`DjangoRecordingBus`
    for :class:`~eventbus.testing.RecordingBus`, and ``bus_class`` itself when it is a
    :class:`DjangoEventBus` (a project's own bus class derives from one of those two).

    Raises:
        ImproperlyConfigured: any other class: the project's bus must be a
            :class:`DjangoEventBus` (lazy connection, declared handlers).
    """
    if issubclass(bus_class, DjangoEventBus):
        return bus_class
    if bus_class is EventBus:
        return DjangoEventBus
    if bus_class is RecordingBus:
        return DjangoRecordingBus
    name = f"{bus_class.__module__}.{bus_class.__qualname__}"
    raise ImproperlyConfigured(
        f"settings.EVENTBUS: BUS_CLASS {name} is not a DjangoEventBus: derive it from "
        "eventbus.contrib.django.DjangoEventBus (or, for a recording bus, from "
        "eventbus.contrib.django.project.DjangoRecordingBus)"
    )


class _Project:
    """This process's bus and its settings (Django keeps connections the same way)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.bus: DjangoEventBus | None = None
        self.settings: DjangoSettings | None = None
        self.handlers_started = False  # by start_handlers(): the worker
        self.exit_hook = False


_project = _Project()


def project_settings() -> DjangoSettings:
    """``settings.EVENTBUS``, checked (read once per process, again after a change).

    Raises:
        ImproperlyConfigured: the setting is missing or invalid.
    """
    with _project.lock:
        if _project.settings is None:
            # Under override_settings SETTINGS_MODULE reads None: fall back to the
            # variable Django itself read it from.
            module = (
                getattr(settings, "SETTINGS_MODULE", None)
                or os.environ.get(ENVIRONMENT_VARIABLE)
                or ""
            )
            default_name = module.split(".")[0] or "django"
            _project.settings = read_settings(
                getattr(settings, "EVENTBUS", None), default_service_name=default_name
            )
        return _project.settings


def get_bus() -> DjangoEventBus:
    """The project's bus, built from ``settings.EVENTBUS`` on first call (no I/O).

    A :class:`DjangoEventBus`; with ``EVENTBUS["BUS_CLASS"]`` an instance of that class
    too (see :func:`project_bus_class`), e.g. a :class:`DjangoRecordingBus` in tests::

        get_bus().assert_published("photo.uploaded", where={"photoId": 7})

    Raises:
        ImproperlyConfigured: the setting is missing or invalid (or its ``BUS_CLASS``
            has no project bus class, see :func:`project_bus_class`).
    """
    current = _project.bus
    if current is not None:
        return current
    with _project.lock:
        if _project.bus is None:
            options = project_settings()
            _project.bus = project_bus_class(options.bus_class)(
                options.config,
                start_handlers=options.handle_in_process or _project.handlers_started,
            )
        return _project.bus


def start_handlers() -> DjangoEventBus:
    """Run the declared handlers in this process from now on (the worker calls this).

    Returns the project's bus, its declared handlers subscribed; a bus that replaces
    it after a settings change subscribes them too.
    """
    with _project.lock:
        _project.handlers_started = True
        current = get_bus()
        current.start_handlers()
        return current


def reset_bus(timeout: float | None = None) -> None:
    """Forget the project's bus and settings; the next :func:`get_bus` builds new ones.

    A connected bus is disconnected (``timeout`` as for
    :meth:`~eventbus.EventBus.disconnect`). Runs when ``settings.EVENTBUS`` changes.
    Declared handlers are kept.
    """
    with _project.lock:
        old, _project.bus, _project.settings = _project.bus, None, None
    if old is not None and old.is_connected():
        old.disconnect(timeout)


def _register_exit_hook() -> None:
    with _project.lock:
        if not _project.exit_hook:
            _project.exit_hook = True
            atexit.register(_disconnect_at_exit)


def _disconnect_at_exit() -> None:
    """Flush batched publishes and stop the threads when the process ends normally."""
    current = _project.bus
    if current is not None and current.is_connected():
        current.disconnect()


class _BusProxy:
    """The project's bus, as a proxy to :func:`get_bus` (like ``django.core.cache.cache``).

    Attribute access goes to the project's current bus, so importing it needs no
    settings yet, and it follows a change of ``settings.EVENTBUS``.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and doc tools probing: not the bus's
            raise AttributeError(name)
        return getattr(get_bus(), name)

    def __repr__(self) -> str:
        return "<proxy to the Django project's EventBus (eventbus.contrib.django.get_bus())>"


#: The project's bus, ``from eventbus.contrib.django import bus``: a proxy to
#: :func:`get_bus`, safe to import before Django is set up.
bus: DjangoEventBus = cast(DjangoEventBus, _BusProxy())
