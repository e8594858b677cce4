"""The documented import path of :class:`Worker` and :func:`run_worker` (docs/worker.md).

``from eventbus._worker import run_worker`` is how applications embed the worker loop;
the code lives with the ``eventbus worker`` command in :mod:`eventbus.cli._worker`, and
this module keeps the documented path working.
"""

from __future__ import annotations

from eventbus.cli._worker import EXIT_OK, EXIT_UNFINISHED, Worker, run_worker

__all__ = ["EXIT_OK", "EXIT_UNFINISHED", "Worker", "run_worker"]
