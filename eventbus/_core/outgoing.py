"""Preparing a publish: every check and the encoding, before anything is sent.

:func:`prepare` is the one path from the arguments of a publish to the bytes of its
envelope (``docs/wire-format.md``): it checks the names (``docs/concepts.md``), picks
the channel, takes an id and a time, encodes, and checks the size. The bus then only
numbers the envelope (:func:`~eventbus._core.envelope.seal`) and sends it. The four
publish methods of :class:`~eventbus.EventBus` use it, and so does Django's
``publish_on_commit``, which checks an event when it is deferred, not when the
transaction commits. Pure: no I/O, no state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

from eventbus._core.config import EventBusConfig
from eventbus._core.envelope import SEAL_SIZE, encode, new_event_id, timestamp
from eventbus._core.keyspace import Keyspace
from eventbus._core.names import (
    user_room,
    validate_event_id,
    validate_event_type,
    validate_room,
)
from eventbus._errors import EventTooLargeError

__all__ = ["Outgoing", "Sender", "prepare"]


@attrs.frozen(kw_only=True)
class Sender:
    """What every publish of one bus shares: its keys, names and size limit.

    Attributes:
        keys: the bus's key and channel names.
        source: the publishing service (``event.source``).
        publisher: the publishing bus's client id.
        max_size: the largest encoded event accepted, bytes.
    """

    keys: Keyspace
    source: str
    publisher: str
    max_size: int

    @classmethod
    def from_config(cls, config: EventBusConfig, *, publisher: str) -> Sender:
        """The sender of a bus with ``config`` and client id ``publisher``."""
        return cls(
            keys=Keyspace(prefix=config.key_prefix),
            source=config.service_name,
            publisher=publisher,
            max_size=config.max_event_size,
        )


Outgoing: TypeAlias = tuple[str, str, str, bytes, str | None]
"""A checked, encoded event waiting for its sequence number: ``(channel, event_type,
event_id, body, room)``. ``room`` is the room (or user room) it is addressed to, None
for a publish or a broadcast (which durable groups also receive). A plain tuple, not a
named one: building it is on every publish's path."""


def prepare(
    sender: Sender,
    event_type: str,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
    event_id: str | None = None,
    *,
    room: str | None = None,
    user: str | None = None,
    broadcast: bool = False,
    now_ns: int | None = None,
) -> Outgoing:
    """Check and encode one publish: to ``user``, else to ``room``, else a broadcast
    or (the default) a plain publish on the event type's channel.

    Args:
        sender: the publishing bus's :class:`Sender`.
        event_type, data, headers, event_id: as for :meth:`EventBus.publish
            <eventbus.EventBus.publish>`; a new ULID when ``event_id`` is None.
        room, user, broadcast: the addressing of ``publish_to_room``,
            ``publish_to_user`` and ``broadcast``.
        now_ns: the publish time (``time.time_ns()`` by default).

    Raises:
        InvalidNameError: a bad event type, room, user id or event id.
        SerializationError: ``data`` or ``headers`` cannot be encoded.
        EventTooLargeError: the encoded event is over ``sender.max_size``.
    """
    keys = sender.keys
    if user is not None:
        room = user_room(user)  # validates the id
        validate_event_type(event_type)
        channel = keys.room_channel(room)
    elif room is not None:
        validate_room(room)
        validate_event_type(event_type)
        channel = keys.room_channel(room)
    else:
        validate_event_type(event_type)
        channel = keys.broadcast_channel if broadcast else keys.event_channel(event_type)
    if now_ns is None:
        now_ns = time.time_ns()
    if event_id is None:
        event_id = new_event_id(now_ns)
    else:
        validate_event_id(event_id)
    body = encode(
        event_id=event_id,
        event_type=event_type,
        source=sender.source,
        moment=timestamp(now_ns),
        data=data,
        publisher=sender.publisher,
        room=room,
        user=user,
        broadcast=broadcast,
        headers=headers,
    )
    if len(body) + SEAL_SIZE > sender.max_size:
        raise EventTooLargeError(
            f"event {event_type} is {len(body)} bytes encoded; the limit is {sender.max_size}",
            size=len(body),
            limit=sender.max_size,
        )
    return channel, event_type, event_id, body, room
