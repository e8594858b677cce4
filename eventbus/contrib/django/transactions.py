"""Publishing when the surrounding database transaction commits.

``publish_on_commit`` (and its room, user and broadcast variants) checks its
arguments at once, then hands the send to :func:`django.db.transaction.on_commit`:

- inside ``atomic()``, the event is sent after the outermost block commits, and never
  if it (or the savepoint the call was made in) rolls back;
- outside any atomic block (autocommit), it is sent at once;
- a failure of the send itself comes after the data is committed, so it is not
  raised into the code that committed (that would turn a saved upload into an HTTP
  500): it is logged at ERROR on ``eventbus.contrib.django`` and sent as the
  :data:`~eventbus.contrib.django.signals.publish_failed` signal, and the other
  ``on_commit`` callbacks of the transaction still run.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from eventbus._core.outgoing import Sender, prepare
from eventbus.contrib.django.project import DjangoEventBus, get_bus
from eventbus.contrib.django.signals import publish_failed

__all__ = [
    "broadcast_on_commit",
    "publish_on_commit",
    "publish_to_room_on_commit",
    "publish_to_user_on_commit",
]

log = logging.getLogger("eventbus.contrib.django")


def _defer(
    event_type: str,
    data: Any,
    *,
    room: str | None = None,
    user_id: str | None = None,
    broadcast: bool = False,
    headers: Mapping[str, str] | None,
    using: str | None,
) -> None:
    # The checks and the encoding of the publish itself, now, with nothing sent: bad
    # input raises in the caller, not after its transaction committed.
    now = get_bus()
    sender = Sender.from_config(now.config, publisher=now.client_id)
    prepare(sender, event_type, data, headers, room=room, user=user_id, broadcast=broadcast)
    # What is sent is what was passed now, not what the caller's objects hold at commit.
    data = copy.deepcopy(data)
    headers = dict(headers) if headers is not None else None

    def send() -> None:
        bus = get_bus()  # the project's bus at commit time (settings may have changed)
        try:
            if user_id is not None:
                result = bus.publish_to_user(user_id, event_type, data, headers=headers)
            elif room is not None:
                result = bus.publish_to_room(room, event_type, data, headers=headers)
            elif broadcast:
                result = bus.broadcast(event_type, data, headers=headers)
            else:
                result = bus.publish(event_type, data, headers=headers)
        except Exception as exc:  # reported below: the transaction has committed already
            target = f" to user {user_id}" if user_id else f" to room {room}" if room else ""
            log.error(
                "event %s%s was not sent after its transaction committed: %s",
                event_type,
                target,
                exc,
                exc_info=exc,
            )
            publish_failed.send_robust(
                sender=DjangoEventBus,
                bus=bus,
                event_type=event_type,
                data=data,
                room=room,
                user_id=user_id,
                broadcast=broadcast,
                headers=headers,
                error=exc,
            )
            return
        log.debug("sent %s %s after commit", result.event_type, result.event_id)

    send.__qualname__ = f"publish_on_commit({event_type!r})"  # Django's logs name it
    transaction.on_commit(send, using=using, robust=True)


def publish_on_commit(
    event_type: str,
    data: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    using: str | None = None,
) -> None:
    """Publish an event when the current transaction of ``using`` commits.

    Like :meth:`EventBus.publish <eventbus.EventBus.publish>` on the project's bus,
    deferred with :func:`django.db.transaction.on_commit`: after the outermost
    ``atomic()`` block commits, never after a rollback, at once outside a
    transaction. ``data`` is copied now. A failure of the send itself comes after the
    commit: it is logged and sent as the
    :data:`~eventbus.contrib.django.signals.publish_failed` signal, never raised.

    Example::

        with transaction.atomic():
            photo = Photo.objects.create(owner=request.user, file=upload)
            publish_on_commit("photo.uploaded", {"photoId": photo.pk})

    Args:
        event_type: dotted name, e.g. ``photo.uploaded``.
        data: any JSON-serialisable value.
        headers: string metadata.
        using: the database alias whose transaction decides (default ``"default"``).

    Raises:
        ValidationError: bad type, data, headers or size; nothing was deferred.
        ImproperlyConfigured: ``settings.EVENTBUS`` is invalid.
    """
    _defer(event_type, data, headers=headers, using=using)


def publish_to_room_on_commit(
    room: str,
    event_type: str,
    data: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    using: str | None = None,
) -> None:
    """:meth:`~eventbus.EventBus.publish_to_room` when the transaction commits.

    Behaves as :func:`publish_on_commit`.
    """
    _defer(event_type, data, room=room, headers=headers, using=using)


def publish_to_user_on_commit(
    user_id: str,
    event_type: str,
    data: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    using: str | None = None,
) -> None:
    """:meth:`~eventbus.EventBus.publish_to_user` when the transaction commits.

    Behaves as :func:`publish_on_commit`.
    """
    _defer(event_type, data, user_id=user_id, headers=headers, using=using)


def broadcast_on_commit(
    event_type: str,
    data: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    using: str | None = None,
) -> None:
    """:meth:`~eventbus.EventBus.broadcast` when the transaction commits.

    Behaves as :func:`publish_on_commit`.
    """
    _defer(event_type, data, broadcast=True, headers=headers, using=using)
