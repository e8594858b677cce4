"""Run eventbus handlers inside Celery workers: connect after fork, disconnect at exit.

Example (``proj/celery.py``, started with ``celery -A proj worker``)::

    from celery import Celery
    from eventbus import Event, EventBus
    from eventbus.contrib.celery import EventBusCelery

    app = Celery("proj", broker="redis://localhost:6379/1")
    bus = EventBus.from_env(service_name="photo-worker")
    EventBusCelery(bus, app)  # or: events = EventBusCelery(bus); events.init_app(app)


    @bus.on("photo.uploaded", group="thumbnails")
    def make_thumbnail(event: Event) -> None: ...


    @app.task
    def process(photo_id: str) -> None:
        bus.publish_to_room(f"photo:{photo_id}", "processing.update", {"progress": 50})

Where the bus connects depends on the pool:

* **prefork** (the default): in each pool child process, on ``worker_process_init``
  (after the fork), and it disconnects on ``worker_process_shutdown`` (when the child
  exits: warm shutdown, ``max_tasks_per_child``, ``max_memory_per_child``). The
  main process, which only supervises, never connects: so handlers run only in the
  children, each child is its own consumer of every durable group and its own
  fan-out subscriber.
* **solo**, **threads** (and any pool that does not fork): in the worker's one
  process, on ``worker_init``, and it disconnects on ``worker_shutdown``.

Built only on the public API of :mod:`eventbus`. Celery is imported by this module
(installed with the ``celery`` extra); ``import eventbus`` never imports it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from eventbus import EventBus, TransportError

try:
    from celery import Celery, signals
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool
except ImportError as exc:  # pragma: no cover - the test environment has Celery
    raise ImportError(
        "eventbus.contrib.celery needs Celery: pip install 'shared-infra-event-bus[celery]'"
    ) from exc

__all__ = ["EventBusCelery", "setup"]

log = logging.getLogger("eventbus.celery")

_GREEN_POOLS = ("eventlet", "gevent")


class EventBusCelery:
    """Connect ``bus`` in every Celery worker process that runs tasks; disconnect it at exit.

    Example::

        app = Celery("proj")
        bus = EventBus.from_env(service_name="photo-worker")
        EventBusCelery(bus, app)

    With the prefork pool the bus connects in each child process after the fork
    (``worker_process_init``) and disconnects when the child exits
    (``worker_process_shutdown``); with the solo and threads pools it connects in the
    worker process on ``worker_init`` and disconnects on ``worker_shutdown``. Handlers
    subscribed with ``@bus.on`` (fan-out and durable groups) then run in those
    processes, and tasks can publish.

    Only Celery *worker* processes are affected: a web process that sends tasks
    connects its bus itself.

    Args:
        bus: the bus the app's handlers are subscribed on.
        app: the Celery app; or call :meth:`init_app` later.
        shutdown_timeout: seconds the disconnect at exit waits for running and
            queued handlers (default: the bus's ``config.shutdown_timeout``).
    """

    def __init__(
        self,
        bus: EventBus,
        app: Celery | None = None,
        *,
        shutdown_timeout: float | None = None,
    ) -> None:
        if not isinstance(bus, EventBus):
            raise TypeError(f"bus must be an EventBus, got {type(bus).__name__}")
        if shutdown_timeout is not None and not shutdown_timeout >= 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {shutdown_timeout!r}")
        self._bus = bus
        self._shutdown_timeout = shutdown_timeout
        self._app_ids: set[int] = set()
        self._registered = False
        # Per process: set in the worker's main process by worker_init, inherited by
        # the prefork children through fork().
        self._pool_forks = False
        self._connected_in: int | None = None  # the pid that connected the bus
        if app is not None:
            self.init_app(app)

    @property
    def bus(self) -> EventBus:
        """The bus this integration connects."""
        return self._bus

    def init_app(self, app: Celery) -> None:
        """Connect the bus in ``app``'s worker processes (registers Celery signal receivers).

        Calling it again for the same app does nothing.
        """
        if not isinstance(app, Celery):
            raise TypeError(f"app must be a Celery app, got {type(app).__name__}")
        self._app_ids.add(id(app))
        if self._registered:
            return
        self._registered = True
        # weak=False: the receivers are bound methods of this object, which the user
        # may not keep a reference to.
        signals.worker_init.connect(self._on_worker_init, weak=False)
        signals.worker_process_init.connect(self._on_worker_process_init, weak=False)
        signals.worker_process_shutdown.connect(self._on_worker_process_shutdown, weak=False)
        signals.worker_shutdown.connect(self._on_worker_shutdown, weak=False)

    # -- the worker's main process -----------------------------------------------------

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        """worker_init, in the worker's main process before the pool starts."""
        if id(getattr(sender, "app", None)) not in self._app_ids:
            return  # another app's worker
        pool = get_implementation(getattr(sender, "pool_cls", "prefork"))
        self._pool_forks = isinstance(pool, type) and issubclass(pool, PreforkPool)
        pool_name = getattr(pool, "__module__", str(pool)).rpartition(".")[2]
        if self._pool_forks:
            if self._bus.is_connected():
                log.warning(
                    "eventbus: bus %s is already connected in the Celery main process "
                    "(pid %d), which runs no tasks: its handlers run here too. Do not "
                    "connect it at import; EventBusCelery connects it in each pool process",
                    self._bus.client_id,
                    os.getpid(),
                )
            return
        if pool_name in _GREEN_POOLS:
            log.warning(
                "eventbus: the %s pool is not supported: the bus runs real threads and "
                "blocking sockets; use prefork, threads or solo",
                pool_name,
            )
        self._connect(f"the worker process ({pool_name} pool)")

    def _on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        """worker_shutdown, in the worker's main process when it stops."""
        if self._connected_in == os.getpid():
            self._disconnect("the worker process")

    # -- prefork pool children ---------------------------------------------------------

    def _on_worker_process_init(self, **_: Any) -> None:
        """worker_process_init, in each prefork child before it runs a task."""
        # A forked child inherits _pool_forks from its parent's worker_init (only for our
        # app's worker); a child billiard started as a fresh interpreter did not run it.
        if not (self._pool_forks or os.environ.get("FORKED_BY_MULTIPROCESSING")):
            return
        self._connect("pool process")

    def _on_worker_process_shutdown(self, **_: Any) -> None:
        """worker_process_shutdown, in a prefork child as it exits."""
        if self._connected_in == os.getpid():
            self._disconnect("pool process")

    # -- both ----------------------------------------------------------------------------

    def _connect(self, where: str) -> None:
        bus = self._bus
        try:
            bus.connect()
        except TransportError as exc:
            # Celery would log a receiver's exception and go on, so say it plainly:
            log.error(
                "eventbus: bus %s cannot connect in %s %d to %s: %s; its handlers do not "
                "run in this process, and publishing here raises BusStateError",
                bus.service_name,
                where,
                os.getpid(),
                bus.config.transport_url,
                exc,
                exc_info=exc,
            )
            return
        self._connected_in = os.getpid()
        log.info(
            "eventbus: bus %s connected in %s %d (%d subscription(s))",
            bus.client_id,
            where,
            os.getpid(),
            len(bus.subscriptions()),
        )

    def _disconnect(self, where: str) -> None:
        bus = self._bus
        self._connected_in = None
        timeout = (
            bus.config.shutdown_timeout
            if self._shutdown_timeout is None
            else self._shutdown_timeout
        )
        try:
            bus.disconnect(timeout=timeout)
        except Exception:
            log.exception("eventbus: disconnecting bus %s in %s failed", bus.client_id, where)
            return
        stats = bus.get_stats()
        log.info(
            "eventbus: bus %s disconnected in %s %d (%d handled, %d failed)",
            bus.client_id,
            where,
            os.getpid(),
            stats.events_handled,
            stats.events_failed,
        )


def setup(app: Celery, bus: EventBus, *, shutdown_timeout: float | None = None) -> EventBusCelery:
    """Connect ``bus`` in ``app``'s worker processes; the one-call form of
    :class:`EventBusCelery`.

    Example::

        from eventbus.contrib.celery import setup

        setup(app, bus)
    """
    return EventBusCelery(bus, app, shutdown_timeout=shutdown_timeout)
