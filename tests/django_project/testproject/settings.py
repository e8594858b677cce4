"""Settings of the test project; the test chooses the database and ``EVENTBUS``.

``TESTPROJECT_DB``: the SQLite file (default ``:memory:``).
``TESTPROJECT_TEST_DB``: the SQLite file of ``manage.py test`` (default: in memory).
``TESTPROJECT_EVENTBUS``: ``settings.EVENTBUS`` as JSON (default ``memory://``).
"""

from __future__ import annotations

import json
import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
USE_TZ = True
ROOT_URLCONF = "testproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "eventbus.contrib.django",
    "photos",
    "notifications",
]

MIDDLEWARE: list[str] = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTPROJECT_DB", ":memory:"),
        "OPTIONS": {"timeout": 20},
        "TEST": {"NAME": os.environ.get("TESTPROJECT_TEST_DB")},
    }
}

EVENTBUS = json.loads(os.environ.get("TESTPROJECT_EVENTBUS", '{"URL": "memory://testproject"}'))
