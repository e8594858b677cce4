"""What the photo service's processes share: settings, event names, the photo records.

Every process reads its settings from the environment, which the launcher
(``python -m examples.photo_service``) sets for its children:

``EVENTBUS_URL``
    the bus, and the photo records (keys ``photo_service:*`` in the same database);
    default ``redis://localhost:6379/0``.
``CELERY_BROKER_URL``
    the Celery broker (another database); default ``redis://localhost:6379/1``.
``PHOTO_SERVICE_MEDIA_DIR``
    where uploads and thumbnails are written; default ``<tmp>/eventbus-photo-service``.
``PHOTO_SERVICE_STAGE_SECONDS``
    how long each simulated processing stage takes; default ``0.5``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, cast

import redis

# -- settings ------------------------------------------------------------------------------

DEFAULT_BUS_URL = "redis://localhost:6379/0"
DEFAULT_BROKER_URL = "redis://localhost:6379/1"


def bus_url() -> str:
    """The Redis URL of the bus (and of the photo records)."""
    return os.environ.get("EVENTBUS_URL") or DEFAULT_BUS_URL


def broker_url() -> str:
    """The Redis URL of the Celery broker."""
    return os.environ.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL


def media_dir() -> Path:
    """The directory that holds uploads and thumbnails (created if missing)."""
    default = Path(tempfile.gettempdir()) / "eventbus-photo-service"
    path = Path(os.environ.get("PHOTO_SERVICE_MEDIA_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_seconds() -> float:
    """Seconds each simulated processing stage takes."""
    return float(os.environ.get("PHOTO_SERVICE_STAGE_SECONDS") or 0.5)


# -- event types, groups and rooms -------------------------------------------------------------

PHOTO_UPLOADED = "photo.uploaded"
PROCESSING_STARTED = "photo.processing.started"
PROCESSING_PROGRESS = "photo.processing.progress"  # to the photo's room, see photo_room()
PROCESSING_COMPLETED = "photo.processing.completed"
PROCESSING_FAILED = "photo.processing.failed"
NOTIFICATION = "notification.new"  # to the user, with publish_to_user

# Durable groups: each event is handled by one process of the group, at least once.
PROCESSING_GROUP = "photo-processing"
NOTIFY_READY_GROUP = "notify-photo-ready"
NOTIFY_FAILED_GROUP = "notify-photo-failed"
GROUPS = (PROCESSING_GROUP, NOTIFY_READY_GROUP, NOTIFY_FAILED_GROUP)

# (stage, progress in percent once it is done), in order
STAGES = (("validate", 25), ("resize", 50), ("thumbnail", 75), ("optimize", 100))

# Photo and user ids: a subset of eventbus's naming rules, so that "photo:<id>" and
# "user:<id>" are always valid rooms.
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def photo_room(photo_id: str) -> str:
    """The room whose members (browsers, through the gateway) watch one photo's progress."""
    return f"photo:{photo_id}"


def now() -> str:
    """The current UTC time, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# -- photo records ---------------------------------------------------------------------------

Field = str | int | float  # what a Redis hash field holds
_INT_FIELDS = frozenset({"size", "progress", "width", "height", "thumbnailSize", "optimizedSize"})

# Move a photo from "uploaded" to "processing", once: a second delivery of the same
# upload (groups are at-least-once) finds it taken and does nothing.
_CLAIM = """
if redis.call('HGET', KEYS[1], 'status') == 'uploaded' then
    redis.call('HSET', KEYS[1], 'status', 'processing', 'updatedAt', ARGV[1])
    return 1
end
return 0
"""


class PhotoStore:
    """The photo records: one Redis hash per photo, ``photo_service:photo:<id>``.

    Example::

        store = PhotoStore.from_url("redis://localhost:6379/0")
        store.create("p1", userId="alice", filename="cat.jpg", size=1234)
        store.get("p1")["status"]  # "uploaded"
    """

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def from_url(cls, url: str) -> PhotoStore:
        """A store on the Redis at ``url`` (an eventbus URL: its query options are the bus's)."""
        url = urllib.parse.urlsplit(url)._replace(query="").geturl()
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=5.0))

    def close(self) -> None:
        """Close the store's connections."""
        self._redis.close()

    @staticmethod
    def _key(photo_id: str) -> str:
        return f"photo_service:photo:{photo_id}"

    def create(self, photo_id: str, **fields: Field) -> bool:
        """Record a new upload with status ``uploaded``; False if the id is taken."""
        key = self._key(photo_id)
        if not self._redis.hsetnx(key, "id", photo_id):
            return False
        stamp = now()
        record: dict[str, Field] = {**fields, "status": "uploaded", "progress": 0}
        values = {**record, "createdAt": stamp, "updatedAt": stamp}
        self._redis.hset(key, mapping=values)
        return True

    def delete(self, photo_id: str) -> None:
        """Forget a photo (an upload that could not be announced)."""
        self._redis.delete(self._key(photo_id))

    def get(self, photo_id: str) -> dict[str, Any] | None:
        """The record of a photo, or None."""
        record = cast(dict[str, Any], self._redis.hgetall(self._key(photo_id)))
        if not record:
            return None
        for field in _INT_FIELDS.intersection(record):
            record[field] = int(record[field])
        return record

    def claim(self, photo_id: str) -> bool:
        """Start processing a photo: True for the first caller only."""
        return bool(self._claim(keys=[self._key(photo_id)], args=[now()]))

    def update(self, photo_id: str, **fields: Field) -> None:
        """Set fields of a photo's record."""
        values = {**fields, "updatedAt": now()}
        self._redis.hset(self._key(photo_id), mapping=values)
