"""Models of the photos app."""

from __future__ import annotations

from django.db import models


class Photo(models.Model):
    """An uploaded photo."""

    title = models.CharField(max_length=100)
    owner = models.CharField(max_length=100)


class JobRun(models.Model):
    """One run of the ``job.*`` group handler, written by the worker."""

    event_id = models.CharField(max_length=64)
    job = models.IntegerField()
    pid = models.IntegerField()
    state = models.CharField(max_length=10)
