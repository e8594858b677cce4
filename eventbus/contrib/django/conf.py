"""``settings.EVENTBUS``: read, check and turn into an :class:`~eventbus.EventBusConfig`.

Keys are upper-case, as Django settings are. Besides the keys of this integration
(``URL``, ``SERVICE_NAME``, ``KEY_PREFIX``, ``HANDLE_IN_PROCESS``, ``HANDLER_MODULE``,
``BUS_CLASS``), every field of :class:`~eventbus.EventBusConfig` is accepted under its
upper-cased name (``PUBLISH_TIMEOUT``, ``HANDLER_THREADS``, ``SHUTDOWN_TIMEOUT``...),
and the nested configs as dictionaries (``REDIS``, ``PERFORMANCE``, ``CLIENT``) with
upper-cased field names; :meth:`EventBusConfig.from_mapping
<eventbus.EventBusConfig.from_mapping>` reads them. Anything else, or a value the config rejects, is
:class:`~django.core.exceptions.ImproperlyConfigured`, raised when Django starts and
before any connection is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs
from django.core.exceptions import ImproperlyConfigured

from eventbus import ConfigurationError, EventBus, EventBusConfig
from eventbus.contrib._settings import bus_class_setting, is_recording

__all__ = ["DjangoSettings", "config_from_settings", "is_recording", "read_settings"]

#: Keys of ``settings.EVENTBUS`` that are not :class:`EventBusConfig` fields.
_OWN_KEYS = ("HANDLE_IN_PROCESS", "HANDLER_MODULE", "BUS_CLASS")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen(kw_only=True)
class DjangoSettings:
    """``settings.EVENTBUS``, checked: the bus's config and this integration's options.

    Attributes:
        config: what the project's bus is built with.
        handle_in_process: run the ``events.py`` handlers in every process that
            connects the bus, not only in ``manage.py eventbus_worker``.
        handler_module: the module name autodiscovered in each installed app
            (``events``), or None to autodiscover nothing.
        bus_class: the class the project's bus is made from (``BUS_CLASS``):
            :class:`~eventbus.EventBus` by default, or a subclass such as
            :class:`~eventbus.testing.RecordingBus` in tests.
    """

    config: EventBusConfig
    handle_in_process: bool = False
    handler_module: str | None = "events"
    bus_class: type[EventBus] = EventBus

    @property
    def records(self) -> bool:
        """Whether :attr:`bus_class` is a :class:`~eventbus.testing.RecordingBus`: no
        transport, handlers run in the thread that calls ``drain()``."""
        return is_recording(self.bus_class)


def _fail(message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"settings.EVENTBUS: {message}")


def read_settings(value: object, *, default_service_name: str = "django") -> DjangoSettings:
    """Check a ``settings.EVENTBUS`` value and build the bus's config from it.

    Does no I/O. ``URL`` is required (``memory://`` for tests); ``SERVICE_NAME``
    defaults to ``default_service_name``; ``KEY_PREFIX`` and ``REDIS`` refine a
    Redis URL and are ignored for ``memory://``. The config is read by
    :meth:`EventBusConfig.from_mapping <eventbus.EventBusConfig.from_mapping>`.
    ``BUS_CLASS`` is imported here; for a :class:`~eventbus.testing.RecordingBus`,
    ``HANDLE_IN_PROCESS`` defaults to True (its handlers run only when a test calls
    ``drain()``).

    Example::

        read_settings({"URL": "redis://localhost:6379/0", "SERVICE_NAME": "photo-api"})

    Raises:
        ImproperlyConfigured: a key is unknown or missing, or a value is invalid
            (the :class:`~eventbus.ConfigurationError` is its ``__cause__``).
    """
    if not isinstance(value, Mapping):
        raise _fail(f"must be a dict such as {{'URL': 'redis://localhost:6379/0'}}, got {value!r}")
    try:
        config = EventBusConfig.from_mapping(
            value, ignore=_OWN_KEYS, default_service_name=default_service_name
        )
        bus_class = bus_class_setting(value.get("BUS_CLASS", EventBus), key="BUS_CLASS")
    except ConfigurationError as exc:
        raise _fail(str(exc)) from exc
    url = value.get("URL")
    if not isinstance(url, str) or not url:
        raise _fail(
            "URL is required: the transport, e.g. 'redis://localhost:6379/0' "
            f"('memory://' in tests), got {url!r}"
        )
    handle_in_process = value.get("HANDLE_IN_PROCESS", is_recording(bus_class))
    if not isinstance(handle_in_process, bool):
        raise _fail(f"HANDLE_IN_PROCESS must be True or False, got {handle_in_process!r}")
    handler_module = value.get("HANDLER_MODULE", "events")
    if handler_module is not None and (
        not isinstance(handler_module, str) or _MODULE_NAME.fullmatch(handler_module) is None
    ):
        raise _fail(
            f"HANDLER_MODULE must be a module name such as 'events', or None, "
            f"got {handler_module!r}"
        )
    return DjangoSettings(
        config=config,
        handle_in_process=handle_in_process,
        handler_module=handler_module,
        bus_class=bus_class,
    )


def config_from_settings(value: object, *, default_service_name: str = "django") -> EventBusConfig:
    """The :class:`~eventbus.EventBusConfig` a ``settings.EVENTBUS`` value describes.

    For a second bus built from the same kind of setting::

        other = EventBus(config_from_settings(settings.EVENTBUS_ANALYTICS))

    Raises:
        ImproperlyConfigured: see :func:`read_settings`.
    """
    return read_settings(value, default_service_name=default_service_name).config
