"""URLs of the test project."""

from __future__ import annotations

from django.urls import path
from photos import views

urlpatterns = [
    path("ping/", views.ping),
    path("photos/", views.upload),
]
