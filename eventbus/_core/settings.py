"""Reading a settings mapping (Django's ``settings.EVENTBUS``, Flask's ``app.config``).

The pieces of :meth:`EventBusConfig.from_mapping
<eventbus.EventBusConfig.from_mapping>` that do not depend on the config classes:
unknown keys refused with a "did you mean" hint, nested configs given as dicts of
their fields (in either case), and strings (from the environment) read as numbers.
Every error is a :class:`~eventbus.ConfigurationError` naming the key.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from eventbus._errors import ConfigurationError

__all__ = ["build_nested", "check_keys", "nested_fields", "read_scalar"]

C = TypeVar("C", bound=attrs.AttrsInstance)


def _hint(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_keys(keys: Iterable[object], known: Collection[str]) -> None:
    """Refuse any of ``keys`` that is not ``known``, suggesting the closest known one.

    Raises:
        ConfigurationError: ``unknown key(s) EVENTBUS_PUBLISH_TIMOUT (did you mean
            EVENTBUS_PUBLISH_TIMEOUT?) (known: ...)``.
    """
    unknown = sorted(str(key) for key in keys if key not in known)
    if unknown:
        hints = ", ".join(f"{name}{_hint(name, known)}" for name in unknown)
        raise ConfigurationError(f"unknown key(s) {hints} (known: {', '.join(sorted(known))})")


def read_scalar(default: object, key: str, value: object) -> object:
    """``value`` for a field whose default is ``default``: a string read as a number
    where the default is one (``"0.5"`` -> 0.5), anything else as it is.

    Raises:
        ConfigurationError: a string that is not such a number.
    """
    kind = type(default)
    if not isinstance(value, str) or kind not in (int, float):
        return value
    try:
        return kind(value.strip())
    except ValueError:
        raise ConfigurationError(f"{key}: cannot read {value!r} as {kind.__name__}") from None


def nested_fields(cls: type[C], key: str, value: object) -> dict[str, Any]:
    """The fields of a nested config given as a dict (``{"BATCH_SIZE": 50}`` or
    ``{"batch_size": 50}``), by field name.

    Raises:
        ConfigurationError: ``value`` is no mapping, or names no field of ``cls``.
    """
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{key} must be a dict of {cls.__name__} fields or a {cls.__name__}, got {value!r}"
        )
    known = {field.name.upper(): field.name for field in attrs.fields(cls)}
    fields: dict[str, Any] = {}
    for name, item in value.items():
        field = known.get(name.upper()) if isinstance(name, str) else None
        if field is None:
            raise ConfigurationError(
                f"unknown key {key}[{name!r}]{_hint(str(name).upper(), known)} "
                f"(known: {', '.join(sorted(known))})"
            )
        fields[field] = item
    return fields


def build_nested(cls: type[C], key: str, value: object) -> C:
    """A ``cls`` given as itself or as a dict of its fields (see :func:`nested_fields`).

    Raises:
        ConfigurationError: a bad dict, a missing field, or an invalid value.
    """
    if isinstance(value, cls):
        return value
    try:
        return cls(**nested_fields(cls, key, value))
    except TypeError as exc:  # a required field is missing
        raise ConfigurationError(f"{key}: {exc}") from None
