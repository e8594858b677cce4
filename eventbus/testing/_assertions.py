"""Selecting recorded events and describing them in assertion messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from eventbus import Event, ValidationError
from eventbus._core.patterns import compile_pattern

__all__ = ["Where", "compile_where", "describe_events", "describe_query", "select"]

#: What ``where=`` accepts: None, a mapping that ``event.data`` must contain, or a
#: predicate on the whole :class:`~eventbus.Event`.
Where: TypeAlias = Mapping[str, Any] | Callable[[Event], bool] | None

_SHOWN_EVENTS = 50
_SHOWN_DATA = 200


def compile_where(where: Where) -> Callable[[Event], bool] | None:
    """A predicate for ``where``; a mapping becomes "``event.data`` contains it".

    Raises:
        ValidationError: ``where`` is neither None, a mapping nor a callable.
    """
    if where is None:
        return None
    if isinstance(where, Mapping):
        expected = dict(where)
        return lambda event: _contains(event.data, expected)
    if callable(where):
        return where
    raise ValidationError(
        "where must be None, a mapping (a subset of event.data) or a callable "
        f"Event -> bool, got {where!r}"
    )


def _contains(actual: Any, expected: Mapping[Any, Any]) -> bool:
    """Whether mapping ``actual`` holds every key of ``expected`` with an equal value.

    Nested mappings in ``expected`` are subsets too; other values compare with ``==``,
    except that a bool never equals a number (JSON semantics, as filters have).
    """
    if not isinstance(actual, Mapping):
        return False
    for key, want in expected.items():
        if key not in actual:
            return False
        have = actual[key]
        if isinstance(want, Mapping):
            if not _contains(have, want):
                return False
        elif isinstance(have, bool) != isinstance(want, bool) or have != want:
            return False
    return True


def select(
    events: Sequence[Event],
    pattern: str,
    where: Where,
    room: str | None,
    user: str | None,
) -> list[Event]:
    """The events whose type matches ``pattern`` and that pass the other criteria.

    Raises:
        InvalidPatternError: ``pattern`` is not a valid subscription pattern.
        ValidationError: ``where`` has the wrong type.
    """
    matcher = compile_pattern(pattern)
    predicate = compile_where(where)
    return [
        event
        for event in events
        if matcher.matches(event.type)
        and (room is None or event.room == room)
        and (user is None or event.user == user)
        and (predicate is None or predicate(event))
    ]


def describe_query(pattern: str, where: Where, room: str | None, user: str | None) -> str:
    """``'photo.*' where data contains {...} to room 'photo:1'``, for messages."""
    text = repr(pattern)
    if isinstance(where, Mapping):
        text += f" where data contains {dict(where)!r}"
    elif where is not None:
        text += f" where {getattr(where, '__qualname__', repr(where))}(event)"
    if room is not None:
        text += f" in room {room!r}"
    if user is not None:
        text += f" to user {user!r}"
    return text


def _describe_event(event: Event) -> str:
    data = repr(event.data)
    if len(data) > _SHOWN_DATA:
        data = data[: _SHOWN_DATA - 3] + "..."
    text = f"{event.type} {data}"
    if event.user is not None:
        text += f" (to user {event.user!r})"
    elif event.room is not None:
        text += f" (to room {event.room!r})"
    elif event.broadcast:
        text += " (broadcast)"
    return text


def describe_events(events: Sequence[Event], title: str) -> str:
    """A numbered list of ``events`` under ``title`` (the newest 50 at most)."""
    if not events:
        return f"{title}: none"
    skipped = max(0, len(events) - _SHOWN_EVENTS)
    lines = [f"{title} ({len(events)}):"]
    if skipped:
        lines.append(f"  ... {skipped} older event(s) not shown")
    lines += [
        f"  {number}. {_describe_event(event)}"
        for number, event in enumerate(events[skipped:], start=skipped + 1)
    ]
    return "\n".join(lines)
