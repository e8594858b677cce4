"""Views of the photos app: one publishes at once, one when its transaction commits."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from eventbus.contrib.django import bus, publish_on_commit
from photos.models import Photo


def ping(request: HttpRequest) -> JsonResponse:
    """Publish ``site.pinged`` now."""
    result = bus.publish("site.pinged", {"path": request.path})
    return JsonResponse({"eventId": result.event_id})


def upload(request: HttpRequest) -> JsonResponse:
    """Save a photo and publish ``photo.uploaded`` when it is committed.

    ``fail=1`` makes the view fail after the insert: the transaction rolls back.
    """
    with transaction.atomic():
        photo = Photo.objects.create(title=request.POST["title"], owner=request.POST["owner"])
        publish_on_commit(
            "photo.uploaded",
            {"photoId": photo.pk, "title": photo.title, "owner": photo.owner},
        )
        if request.POST.get("fail"):
            raise RuntimeError("storage failed after the insert")
    return JsonResponse({"photoId": photo.pk}, status=201)
