"""Naming rules for event types, rooms and user ids, checked before any I/O.

==========  ==============================================================  =========
name        rule                                                            max chars
==========  ==============================================================  =========
event type  segments of ``A-Z a-z 0-9 _ -`` joined by ``.``                  255
            (``photo.uploaded``, ``photo.processing.completed``)
room        segments of ``A-Z a-z 0-9 _ -`` joined by one of ``. : / @ + =``  255
            (``photo:123``, ``team/eng``, ``user:alice@example.com``)
user id     segments of ``A-Z a-z 0-9 _ -`` joined by one of ``. : @ +``      200
            (``user-456``, ``alice@example.com``, ``auth0:abc``)
==========  ==============================================================  =========

A segment is never empty, so a name never starts or ends with a separator and never
holds two separators in a row. No name contains whitespace, braces (Redis Cluster hash
tags) or glob characters (``* ? [ ] \\``), so any of them can go into a Redis key or
channel as is. A user ``U`` is the room ``user:U`` (:func:`user_room`); the user id
limit leaves room for that prefix.
"""

from __future__ import annotations

import re

from eventbus._errors import InvalidNameError

__all__ = [
    "MAX_EVENT_TYPE_LENGTH",
    "MAX_GROUP_LENGTH",
    "MAX_ROOM_LENGTH",
    "MAX_USER_ID_LENGTH",
    "user_room",
    "validate_event_id",
    "validate_event_type",
    "validate_group",
    "validate_room",
    "validate_user_id",
]

MAX_EVENT_TYPE_LENGTH = 255
"""The longest event type, in characters."""
MAX_ROOM_LENGTH = 255
"""The longest room name, in characters."""
MAX_USER_ID_LENGTH = 200
"""The longest user id, in characters (``user:`` + id must be a valid room)."""

_EVENT_TYPE_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_ROOM_RE = re.compile(r"[A-Za-z0-9_-]+(?:[.:/@+=][A-Za-z0-9_-]+)*")
_USER_ID_RE = re.compile(r"[A-Za-z0-9_-]+(?:[.:@+][A-Za-z0-9_-]+)*")

_EVENT_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

_EVENT_TYPE_RULE = "segments of A-Z a-z 0-9 _ - joined by '.'"
_ROOM_RULE = "segments of A-Z a-z 0-9 _ - joined by one of . : / @ + ="
_USER_ID_RULE = "segments of A-Z a-z 0-9 _ - joined by one of . : @ +"


def validate_event_type(event_type: object) -> str:
    """Check that ``event_type`` is a valid event type and return it.

    Args:
        event_type: the candidate, such as ``"photo.uploaded"``.

    Raises:
        InvalidNameError: it is not a str, is empty or longer than 255 characters, or
            is not dot-separated segments of ``A-Z a-z 0-9 _ -``.
    """
    if (
        isinstance(event_type, str)
        and len(event_type) <= MAX_EVENT_TYPE_LENGTH
        and _EVENT_TYPE_RE.fullmatch(event_type)
    ):
        return event_type
    raise _invalid("event type", event_type, _EVENT_TYPE_RULE, MAX_EVENT_TYPE_LENGTH)


def validate_room(room: object) -> str:
    """Check that ``room`` is a valid room name and return it.

    Args:
        room: the candidate, such as ``"photo:123"`` or ``"team/eng"``.

    Raises:
        InvalidNameError: it is not a str, is empty or longer than 255 characters, or
            is not segments of ``A-Z a-z 0-9 _ -`` joined by one of ``. : / @ + =``.
    """
    if isinstance(room, str) and len(room) <= MAX_ROOM_LENGTH and _ROOM_RE.fullmatch(room):
        return room
    raise _invalid("room", room, _ROOM_RULE, MAX_ROOM_LENGTH)


def validate_user_id(user_id: object) -> str:
    """Check that ``user_id`` is a valid user id and return it.

    Args:
        user_id: the candidate, such as ``"user-456"`` or ``"alice@example.com"``.

    Raises:
        InvalidNameError: it is not a str, is empty or longer than 200 characters, or
            is not segments of ``A-Z a-z 0-9 _ -`` joined by one of ``. : @ +``.
    """
    if (
        isinstance(user_id, str)
        and len(user_id) <= MAX_USER_ID_LENGTH
        and _USER_ID_RE.fullmatch(user_id)
    ):
        return user_id
    raise _invalid("user id", user_id, _USER_ID_RULE, MAX_USER_ID_LENGTH)


MAX_GROUP_LENGTH = 100
"""The longest durable group name, in characters."""


def validate_group(group: object) -> str:
    """Check that ``group`` is a valid durable group name and return it.

    Group names follow the event type rule (segments of ``A-Z a-z 0-9 _ -`` joined by
    dots), at most 100 characters: they become part of Redis keys.

    Raises:
        InvalidNameError: it breaks that rule.
    """
    if (
        isinstance(group, str)
        and len(group) <= MAX_GROUP_LENGTH
        and _EVENT_TYPE_RE.fullmatch(group)
    ):
        return group
    raise _invalid("group", group, _EVENT_TYPE_RULE, MAX_GROUP_LENGTH)


def validate_event_id(event_id: object) -> str:
    """Check an id given to ``publish(event_id=...)``: 1-64 of ``A-Z a-z 0-9 _ -``.

    Raises:
        InvalidNameError: it breaks that rule.
    """
    if isinstance(event_id, str) and _EVENT_ID_RE.fullmatch(event_id) is not None:
        return event_id
    raise InvalidNameError(f"event_id must be 1-64 of A-Z a-z 0-9 _ -, got {event_id!r}")


def user_room(user_id: str) -> str:
    """Return the room of a user, ``"user:<user_id>"``, after validating the id.

    Args:
        user_id: the user's id.

    Raises:
        InvalidNameError: ``user_id`` fails :func:`validate_user_id`.
    """
    return f"user:{validate_user_id(user_id)}"


def _invalid(kind: str, value: object, rule: str, limit: int) -> InvalidNameError:
    """Build the error for a rejected name: which rule it broke, and the value."""
    if not isinstance(value, str):
        return InvalidNameError(
            f"invalid {kind} {value!r}: must be a str, not {type(value).__name__}"
        )
    shown = repr(value) if len(value) <= 80 else f"{value[:77]!r}..."
    if not value:
        return InvalidNameError(f"invalid {kind} '': must not be empty ({rule})")
    if len(value) > limit:
        return InvalidNameError(
            f"invalid {kind} {shown}: {len(value)} characters long, at most {limit} are allowed"
        )
    return InvalidNameError(f"invalid {kind} {shown}: must be {rule}")
