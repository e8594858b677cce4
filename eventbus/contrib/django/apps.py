"""The Django app: ``INSTALLED_APPS += ["eventbus.contrib.django"]``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.utils.module_loading import autodiscover_modules

from eventbus.contrib.django.project import get_bus, project_settings, reset_bus

__all__ = ["EventBusAppConfig"]


class EventBusAppConfig(AppConfig):  # type: ignore[misc]  # django is untyped here
    """Checks ``settings.EVENTBUS`` and imports each installed app's ``events.py``.

    At startup (``ready()``), before any connection: the setting is read and checked
    (:class:`~django.core.exceptions.ImproperlyConfigured` if it is wrong), the
    project's bus is built, unconnected, and the handler module of every installed
    app (``EVENTBUS["HANDLER_MODULE"]``, ``events`` by default) is imported, so the
    ``@bus.on`` handlers in it are declared.
    """

    name = "eventbus.contrib.django"
    label = "eventbus"
    verbose_name = "Event bus"

    def ready(self) -> None:
        """Check the setting, build the bus (no I/O), autodiscover handler modules."""
        options = project_settings()
        get_bus()
        if options.handler_module is not None:
            autodiscover_modules(options.handler_module)
        setting_changed.connect(_on_setting_changed, dispatch_uid="eventbus.contrib.django")


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """A changed ``EVENTBUS`` (``override_settings``) gets a new bus on next use."""
    if setting == "EVENTBUS":
        reset_bus()
