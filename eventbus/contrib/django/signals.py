"""Signals of the Django integration.

.. data:: publish_failed

    Sent when an event deferred with :func:`~eventbus.contrib.django.publish_on_commit`
    (or a room, user or broadcast variant) could not be sent after its transaction
    committed. The failure is also logged at ERROR on ``eventbus.contrib.django``;
    connect here to report it elsewhere (Sentry) or to keep the event for a retry
    (an outbox table).

    Keyword arguments: ``sender`` (:class:`~eventbus.contrib.django.DjangoEventBus`),
    ``bus`` (the bus that failed), ``event_type``, ``data``, ``room`` (or None),
    ``user_id`` (or None), ``broadcast`` (bool), ``headers`` (or None), ``error``
    (the exception, usually a :class:`~eventbus.TransportError`).

    Example::

        from django.dispatch import receiver
        from eventbus.contrib.django.signals import publish_failed


        @receiver(publish_failed)
        def keep_for_retry(sender, event_type, data, error, **kwargs):
            FailedEvent.objects.create(event_type=event_type, data=data, error=str(error))
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["publish_failed"]

publish_failed = Signal()
