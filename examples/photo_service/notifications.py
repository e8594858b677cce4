"""The notification service (service ``notification-service``): tell users about their photos.

Run it with::

    eventbus worker examples.photo_service.notifications

``eventbus worker`` imports this module, takes its ``bus``, connects it, runs the
handlers below until SIGTERM or Ctrl-C, then stops gracefully (running handlers
finish and their group entries are acknowledged). Start several: each group event is
handled by one of them.

Each handler turns a processing outcome into a ``notification.new`` event for the
uploading user: ``publish_to_user(user_id, ...)`` sends it to the room
``user:<user_id>``, which every socket of that user joins on the gateway (and any bus
that joined that room receives).
"""

from __future__ import annotations

import logging

from eventbus import Event, EventBus
from examples.photo_service.photos import (
    NOTIFICATION,
    NOTIFY_FAILED_GROUP,
    NOTIFY_READY_GROUP,
    PROCESSING_COMPLETED,
    PROCESSING_FAILED,
    bus_url,
    now,
)

log = logging.getLogger("photo_service.notifications")

bus = EventBus.from_url(bus_url(), service_name="notification-service")


# Durable groups: however many notification workers run, each user gets one
# notification per outcome, and one sent while no worker ran is sent when one starts.
@bus.on(PROCESSING_COMPLETED, group=NOTIFY_READY_GROUP, retry_on_error=True)
def photo_ready(event: Event) -> None:
    """A photo was processed: tell its owner, with a link and the thumbnail."""
    photo_id, user_id = event.data["photoId"], event.data["userId"]
    bus.publish_to_user(
        user_id,
        NOTIFICATION,
        {
            "type": "photo_processed",
            "title": "Your photo is ready!",
            "message": "Photo processing completed successfully",
            "photoId": photo_id,
            "link": f"/photos/{photo_id}",
            "thumbnail": event.data.get("thumbnail"),
            "timestamp": now(),
        },
    )
    log.info("told %s that photo %s is ready", user_id, photo_id)


@bus.on(PROCESSING_FAILED, group=NOTIFY_FAILED_GROUP, retry_on_error=True)
def photo_failed(event: Event) -> None:
    """A photo could not be processed: tell its owner why."""
    photo_id, user_id = event.data["photoId"], event.data["userId"]
    bus.publish_to_user(
        user_id,
        NOTIFICATION,
        {
            "type": "photo_failed",
            "title": "We could not process your photo",
            "message": event.data["error"]["message"],
            "photoId": photo_id,
            "retryable": event.data.get("retryable", False),
            "timestamp": now(),
        },
    )
    log.info("told %s that photo %s failed", user_id, photo_id)
