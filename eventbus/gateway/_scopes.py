"""What a service token may do through the ``/service`` namespace, and how its requests
are read.

:class:`Scopes` parses a token's ``scopes`` claim; :class:`ServiceNames` turns the names
a request carries (relative to the key prefix, see :mod:`eventbus.gateway.services`)
into full Redis names, each checked against the scopes; the ``*_field`` functions read
a request's fields. Every refusal is a :class:`RefusedError` whose code goes back in
the acknowledgement. Nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final

from eventbus._core.keyspace import Keyspace
from eventbus._core.patterns import compile_glob, escape_glob

__all__ = [
    "MAX_BATCH",
    "RefusedError",
    "Scopes",
    "ServiceNames",
    "bytes_field",
    "covers",
    "names_field",
    "payload_field",
    "text_field",
    "ttl_field",
]

log = logging.getLogger("eventbus.gateway.services")

#: The most messages one ``publish_many`` carries.
MAX_BATCH: Final = 1000
_MAX_NAMES: Final = 1000
_GLOB_CHARS: Final = frozenset("*?[\\")


class RefusedError(Exception):
    """A request refused with a reason code (sent back in the acknowledgement)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _forbidden(message: str) -> RefusedError:
    return RefusedError("forbidden", message)


def covers(scope: str, pattern: str) -> bool:
    """Whether every text ``pattern`` matches is matched by the glob ``scope`` too.

    Conservative: equal globs, a literal pattern the scope matches, or a scope
    ``<literal>*`` whose literal head the pattern starts with.
    """
    if scope == pattern:
        return True
    if not _GLOB_CHARS.intersection(pattern):
        return compile_glob(scope).matches(pattern)
    head = scope[:-1]
    return scope.endswith("*") and not _GLOB_CHARS.intersection(head) and pattern.startswith(head)


class Scopes:
    """The permissions of one service token, parsed from its ``scopes`` claim.

    ``publish:<glob>`` (event types), ``subscribe:<glob>`` (event types),
    ``rooms:<glob>`` (room names, ``user:<id>`` included), ``broadcast``, ``presence``.
    Unknown scopes are ignored (and logged).
    """

    def __init__(self, scopes: Iterable[str]) -> None:
        self.publish: list[str] = []
        self.subscribe: list[str] = []
        self.rooms: list[str] = []
        self.broadcast = False
        self.presence = False
        for scope in scopes:
            kind, sep, glob = str(scope).partition(":")
            if kind == "publish" and sep and glob:
                self.publish.append(glob)
            elif kind == "subscribe" and sep and glob:
                self.subscribe.append(glob)
            elif kind == "rooms" and sep and glob:
                self.rooms.append(glob)
            elif scope == "broadcast":
                self.broadcast = True
            elif scope == "presence":
                self.presence = True
            else:
                log.debug("ignoring unknown scope %r", scope)

    def may_publish(self, event_type: str) -> bool:
        """Whether ``publish:<glob>`` allows publishing ``event_type``."""
        return any(compile_glob(g).matches(event_type) for g in self.publish)

    def may_subscribe(self, pattern: str) -> bool:
        """Whether some ``subscribe:<glob>`` covers the type pattern ``pattern``."""
        return any(covers(g, pattern) for g in self.subscribe)

    def may_room(self, room: str) -> bool:
        """Whether ``rooms:<glob>`` allows room ``room``."""
        return any(compile_glob(g).matches(room) for g in self.rooms)

    def as_list(self) -> list[str]:
        """The scopes, normalised (for the dashboard)."""
        out = [f"publish:{g}" for g in self.publish] + [f"subscribe:{g}" for g in self.subscribe]
        out += [f"rooms:{g}" for g in self.rooms]
        return out + ["broadcast"] * self.broadcast + ["presence"] * self.presence


class ServiceNames:
    """The names of the wire (relative to the prefix) as full Redis names, checked.

    Args:
        keys: the gateway's key layout; its prefix is added to every name.
    """

    def __init__(self, keys: Keyspace) -> None:
        self.keys = keys
        self.prefix = keys.prefix
        self.glob_prefix = escape_glob(keys.prefix)

    def relative(self, channel: str) -> str:
        """A full channel name as the wire names it (the prefix removed)."""
        return channel[len(self.prefix) :] if channel.startswith(self.prefix) else channel

    def relative_pattern(self, pattern: str) -> str:
        """A full pattern as the wire names it (the escaped prefix removed)."""
        head = self.glob_prefix
        return pattern[len(head) :] if pattern.startswith(head) else pattern

    def publish_channel(self, scopes: Scopes, rel: str) -> str:
        """The full channel for publishing on ``rel``.

        Raises:
            RefusedError: ``forbidden``: outside the scopes, or not a channel to publish on.
        """
        full = self.prefix + rel
        event_type = self.keys.event_type_of(full)
        if event_type is not None:
            if not event_type or not scopes.may_publish(event_type):
                raise _forbidden(f"publishing {event_type!r} is outside the scopes")
            return full
        room = self.keys.room_of(full)
        if room is not None:
            if not room or not scopes.may_room(room):
                raise _forbidden(f"room {room!r} is outside the scopes")
            return full
        if full == self.keys.broadcast_channel:
            if not scopes.broadcast:
                raise _forbidden("broadcasting needs the scope 'broadcast'")
            return full
        raise _forbidden(f"cannot publish on {rel!r}")

    def subscribe_channel(self, scopes: Scopes, rel: str) -> str:
        """The full channel for subscribing to ``rel`` (broadcasts and group changes: any
        service).

        Raises:
            RefusedError: ``forbidden``.
        """
        full = self.prefix + rel
        if full in (self.keys.broadcast_channel, self.keys.groups_channel):
            return full
        event_type = self.keys.event_type_of(full)
        if event_type is not None:
            literal = event_type and not _GLOB_CHARS.intersection(event_type)
            if literal and scopes.may_subscribe(event_type):
                return full
            raise _forbidden(f"subscribing to {event_type!r} is outside the scopes")
        room = self.keys.room_of(full)
        if room is not None:
            if room and scopes.may_room(room):
                return full
            raise _forbidden(f"room {room!r} is outside the scopes")
        raise _forbidden(f"cannot subscribe to {rel!r}")

    def subscribe_pattern(self, scopes: Scopes, rel: str) -> str:
        """The full pattern for ``PSUBSCRIBE`` to ``rel`` (``ev:<pattern>`` only).

        Raises:
            RefusedError: ``forbidden``.
        """
        if not rel.startswith("ev:") or len(rel) == 3:
            raise _forbidden(f"cannot psubscribe to {rel!r}")
        if not scopes.may_subscribe(rel[3:]):
            raise _forbidden(f"subscribing to {rel[3:]!r} is outside the scopes")
        return self.glob_prefix + rel

    def presence_keys(
        self, scopes: Scopes, data: dict[str, Any], *, write: bool
    ) -> tuple[str, str]:
        """The full presence keys of a request's ``zset`` and ``hash`` (one room's).

        Raises:
            RefusedError: ``malformed``, or ``forbidden``: not a room's keys, no scope
                ``presence``, or (``write``) the room outside the scopes.
        """
        zset, hash_ = self.prefix + text_field(data, "zset"), self.prefix + text_field(data, "hash")
        head, tail = f"{self.prefix}presence:{{", "}:z"
        if not (zset.startswith(head) and zset.endswith(tail)):
            raise _forbidden("not a presence key")
        room = zset[len(head) : -len(tail)]
        if (zset, hash_) != self.keys.presence_keys(room) or not room:
            raise _forbidden("not a room's presence keys")
        if not scopes.presence:
            raise _forbidden("presence needs the scope 'presence'")
        if write and not scopes.may_room(room):
            raise _forbidden(f"room {room!r} is outside the scopes")
        return zset, hash_

    def client_keys(self, data: dict[str, Any]) -> tuple[str, str]:
        """The full keys of the client registry, which a request's ``zset`` and ``hash``
        must name.

        Raises:
            RefusedError: ``malformed`` or ``forbidden``.
        """
        keys = (self.prefix + text_field(data, "zset"), self.prefix + text_field(data, "hash"))
        if keys != self.keys.client_keys:
            raise _forbidden("not the client registry")
        return keys


def text_field(data: dict[str, Any], field: str) -> str:
    """A request's non-empty string ``field`` (at most 1024 characters).

    Raises:
        RefusedError: ``malformed``.
    """
    value = data.get(field)
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise RefusedError("malformed", f"{field} must be a non-empty string")
    return value


def bytes_field(data: dict[str, Any], field: str) -> bytes:
    """A request's bytes ``field`` (a string is encoded).

    Raises:
        RefusedError: ``malformed``.
    """
    value = data.get(field)
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes | bytearray):
        raise RefusedError("malformed", f"{field} must be bytes")
    return bytes(value)


def payload_field(value: Any, max_payload: int) -> bytes:
    """A message's payload: bytes (a string is encoded) of at most ``max_payload``.

    Raises:
        RefusedError: ``malformed`` or ``too_large``.
    """
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray):
        raise RefusedError("malformed", "payload must be bytes")
    if len(value) > max_payload:
        raise RefusedError("too_large", f"payload over {max_payload} bytes")
    return bytes(value)


def ttl_field(data: dict[str, Any]) -> float:
    """A request's ``ttl``: seconds in (0, 86400].

    Raises:
        RefusedError: ``malformed``.
    """
    value = data.get("ttl")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 86400:
        raise RefusedError("malformed", "ttl must be a number of seconds in (0, 86400]")
    return float(value)


def names_field(data: Any) -> list[str]:
    """A request's ``names``: up to 1000 non-empty strings, without repeats, in order.

    Raises:
        RefusedError: ``malformed``.
    """
    names = data.get("names") if isinstance(data, dict) else None
    if (
        not isinstance(names, list)
        or len(names) > _MAX_NAMES
        or not all(isinstance(n, str) and 0 < len(n) <= 1024 for n in names)
    ):
        raise RefusedError("malformed", "names must be a list of non-empty strings")
    return list(dict.fromkeys(names))
