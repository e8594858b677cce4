"""Django integration: settings, handler autodiscovery, ``publish_on_commit``, a worker.

::

    # settings.py
    INSTALLED_APPS = [..., "eventbus.contrib.django"]
    EVENTBUS = {"URL": "redis://localhost:6379/0", "SERVICE_NAME": "photo-api"}

    # photos/events.py: imported at startup, handlers run in `manage.py eventbus_worker`
    from eventbus.contrib.django import bus


    @bus.on("photo.uploaded", group="thumbnails")
    def make_thumbnail(event): ...


    # photos/views.py
    from eventbus.contrib.django import publish_on_commit

    with transaction.atomic():
        photo = Photo.objects.create(...)
        publish_on_commit("photo.uploaded", {"photoId": photo.pk})

Install with the ``django`` extra: ``pip install shared-infra-event-bus[django]``.
See the documentation's Django page.
"""

from __future__ import annotations

from eventbus.contrib.django.conf import config_from_settings
from eventbus.contrib.django.project import (
    DeclaredHandler,
    DjangoEventBus,
    bus,
    get_bus,
    reset_bus,
    start_handlers,
)
from eventbus.contrib.django.transactions import (
    broadcast_on_commit,
    publish_on_commit,
    publish_to_room_on_commit,
    publish_to_user_on_commit,
)

__all__ = [
    "DeclaredHandler",
    "DjangoEventBus",
    "broadcast_on_commit",
    "bus",
    "config_from_settings",
    "get_bus",
    "publish_on_commit",
    "publish_to_room_on_commit",
    "publish_to_user_on_commit",
    "reset_bus",
    "start_handlers",
]
