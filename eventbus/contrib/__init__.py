"""Integrations with web frameworks and task queues.

Each submodule imports its framework lazily, installed with the matching extra:
:mod:`eventbus.contrib.flask` (``shared-infra-event-bus[flask]``),
:mod:`eventbus.contrib.django` (``[django]``) and :mod:`eventbus.contrib.celery`
(``[celery]``).
"""

from __future__ import annotations
