"""What the integrations read from their settings beyond the bus's config.

The config itself comes from :meth:`EventBusConfig.from_mapping
<eventbus.EventBusConfig.from_mapping>`; here are the bus class setting (Flask's
``EVENTBUS_BUS_CLASS``, Django's ``EVENTBUS["BUS_CLASS"]``) and the test for a
recording bus, shared by both integrations.
"""

from __future__ import annotations

import pkgutil

from eventbus import ConfigurationError, EventBus

__all__ = ["bus_class_setting", "is_recording"]


def bus_class_setting(value: object, *, key: str) -> type[EventBus]:
    """The bus class a setting names: :class:`~eventbus.EventBus` or a subclass, given
    as the class or as its import path (``"eventbus.testing.RecordingBus"`` or
    ``"eventbus.testing:RecordingBus"``).

    Args:
        value: the setting's value.
        key: the setting's name, for messages.

    Raises:
        ConfigurationError: the path does not import, or it is no EventBus subclass.
    """
    if isinstance(value, str):
        try:
            value = pkgutil.resolve_name(value.strip())
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(f"{key}: cannot import {value!r}: {exc}") from exc
    if not (isinstance(value, type) and issubclass(value, EventBus)):
        raise ConfigurationError(
            f"{key} must be EventBus or a subclass, or its import path such as "
            f"'eventbus.testing.RecordingBus', got {value!r}"
        )
    return value


def is_recording(bus_class: type[EventBus]) -> bool:
    """Whether ``bus_class`` is a :class:`~eventbus.testing.RecordingBus` (or a subclass)."""
    if bus_class is EventBus:
        return False
    from eventbus.testing import RecordingBus  # the real bus over memory: no server library

    return issubclass(bus_class, RecordingBus)
