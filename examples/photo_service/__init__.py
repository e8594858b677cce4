"""A photo service built on eventbus: Flask uploads, Celery processing, notifications.

The pipeline of the Node README's examples 1 to 3, as three real processes on one Redis:

* :mod:`~examples.photo_service.web` (Flask, service ``photo-api``): ``POST /photos``
  stores the upload and publishes ``photo.uploaded``;
* :mod:`~examples.photo_service.tasks` (a Celery prefork worker, service
  ``photo-worker``): the durable group ``photo-processing`` takes each
  ``photo.uploaded`` and enqueues the Celery task ``process_photo``, which publishes
  ``photo.processing.started``, ``photo.processing.progress`` events to the room
  ``photo:<id>``, then ``photo.processing.completed`` (or ``.failed``);
* :mod:`~examples.photo_service.notifications` (run by ``eventbus worker``, service
  ``notification-service``): turns completed and failed into a
  ``notification.new`` for the uploading user with ``publish_to_user``.

``python -m examples.photo_service`` (:mod:`~examples.photo_service.__main__`)
starts all three. :mod:`~examples.photo_service.photos` holds what they share.
"""
