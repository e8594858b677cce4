"""Handlers of the notifications app."""

from __future__ import annotations

from eventbus import Event
from eventbus.contrib.django import bus


@bus.on("photo.uploaded", filter={"conditions": [{"field": "data.owner", "operator": "exists"}]})
def notify_owner(event: Event) -> None:
    """Tell the photo's owner, in their user room."""
    bus.publish_to_user(event.data["owner"], "notification.new", {"photoId": event.data["photoId"]})
