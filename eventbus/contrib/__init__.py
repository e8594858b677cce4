"""Integrations with web frameworks and task queues.

Each submodule imports its framework lazily, installed with the matching extra:
:mod:`eventbus.contrib.flask` (``eventbus[flask]``), :mod:`eventbus.contrib.django`
(``eventbus[django]``) and :mod:`eventbus.contrib.celery` (``eventbus[celery]``).
"""

from __future__ import annotations
