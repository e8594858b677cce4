"""Test your code that publishes and handles events, without a server.

:class:`RecordingBus` is an :class:`~eventbus.EventBus` that records what is published
(:attr:`RecordingBus.published`, :meth:`RecordingBus.assert_published`) and runs
handlers only when told to (:meth:`RecordingBus.drain`), in the calling thread::

    from eventbus.testing import RecordingBus

    with RecordingBus(service_name="photo-api") as bus:
        upload_photo(bus, "123")  # your code: bus.publish("photo.uploaded", ...)
        bus.assert_published("photo.uploaded", where={"photoId": "123"})

The pytest plugin :mod:`eventbus.testing.pytest_plugin` gives each test a fresh,
connected one as the ``event_bus`` fixture. This module imports neither pytest nor
redis.
"""

from __future__ import annotations

from eventbus.testing._recording import DrainLimitError, RecordingBus

for _name in (DrainLimitError, RecordingBus):
    _name.__module__ = "eventbus.testing"
del _name

__all__ = ["DrainLimitError", "RecordingBus"]
