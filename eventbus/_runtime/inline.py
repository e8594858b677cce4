"""Running handlers in the caller's thread: the ``Dispatcher``'s sibling, for tests.

The bus hands an :class:`InlineExecutor` its deliveries exactly as it hands them to a
:class:`~eventbus._runtime.dispatch.Dispatcher` (:meth:`offer`, from whatever thread
received the message); nothing runs until :meth:`run_next` is called, and then in the
calling thread, one delivery at a time, oldest first. It is what the testing kit's
``RecordingBus`` runs on (docs/testing.md), and it differs from the pool only where a
test needs it to:

- queues are not bounded (nothing runs until asked to: a bound would only drop);
- a failed attempt is retried at once, per the subscription's retry policy, with no
  backoff sleep; a handler's ``timeout`` and ``concurrency`` do not apply;
- a durable group's consumer has no thread: :meth:`poll` runs one round of its loop
  here, reading what is new and taking over at once what was left pending (a failed
  delivery, a stopped consumer's), so a failing group event is delivered again, up
  to ``max_deliveries``, without waiting ``claim_idle``. Of several consumers of one
  group, the oldest reads everything, so that runs are repeatable;
- latencies are not measured, and :meth:`shutdown` drops (and counts) what is still
  queued rather than running it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from eventbus._core.stats import Counters
from eventbus._models import Event
from eventbus._runtime.dispatch import (
    ConsumerLoop,
    ErrorReporter,
    Route,
    attempt_event,
    complete,
    handler_failure,
)

__all__ = ["InlineExecutor"]


class InlineExecutor:
    """An :class:`~eventbus._runtime.wiring.Executor` that runs handlers when told to.

    Thread-safe: events may be offered from any thread while another runs them.
    """

    #: As on a ``Dispatcher``; never set here: no thread is abandoned, no queue
    #: overflows.
    abandoned = 0
    overflow_drops = 0
    last_drop_at: float | None = None

    def __init__(self, *, counters: Counters, report: ErrorReporter) -> None:
        self._counters = counters
        self._report = report
        self._lock = threading.RLock()  # reentrant: a poll's reads offer events
        self._order: deque[Route] = deque()  # one entry per queued event, oldest first
        self._consumers: list[ConsumerLoop] = []
        self._stopped = False
        #: Deliveries offered so far, in all.
        self.offered = 0

    @property
    def pending(self) -> int:
        """Deliveries queued and not run yet."""
        return len(self._order)

    def offer(self, route: Route, event: Event) -> None:
        """Queue ``event`` for ``route``, behind everything queued."""
        with self._lock:
            if not route.active or self._stopped:
                return
            route.received += 1
            route.queue.append(event)
            self._order.append(route)
            self.offered += 1

    def sort_newest(self, count: int, key: Callable[[Route], int]) -> None:
        """Reorder the newest ``count`` queued deliveries by ``key``, stably (so that
        one event's deliveries run in the order of its subscriptions)."""
        with self._lock:
            newest = [self._order.pop() for _ in range(min(count, len(self._order)))][::-1]
            self._order.extend(sorted(newest, key=key))

    def run_consumer(self, consumer: ConsumerLoop) -> None:
        """Take ``consumer`` on: its loop runs in :meth:`poll` from now on."""
        with self._lock:
            self._consumers.append(consumer)
        self.poll()

    def poll(self) -> None:
        """Run one round of each group's oldest running consumer, in this thread.

        Each reads every new entry it has room for and takes over, at once, the
        entries of its group that are pending and not queued here.
        """
        with self._lock:
            self._consumers = [c for c in self._consumers if c.alive()]
            groups: set[str] = set()
            for consumer in self._consumers:
                if consumer.group not in groups:
                    groups.add(consumer.group)
                    while consumer.poll(block=0.0, claim_idle=0.0):
                        pass

    def run_next(self) -> bool:
        """Run the oldest queued delivery (and its retries); False if none is queued.

        A failure is reported, never raised; a group's delivery is settled (acked,
        left for redelivery or dead-lettered) and its consumer polled again.
        """
        with self._lock:
            if not self._order:
                return False
            route = self._order.popleft()
            event = route.queue.popleft()
        number = 1
        while True:
            current = attempt_event(event, number)
            try:
                route.handler(current)
            except Exception as exc:
                if route.retry.should_retry(number):
                    route.retried += 1
                    self._counters.add("events_retried")
                    number += 1
                    continue
                route.failed += 1
                self._counters.add("events_failed")
                failure = handler_failure(route, current, number, exc)
                self._report(failure, current)
                complete(route, event, failure, self._report)
            else:
                route.handled += 1
                self._counters.add("events_handled")
                complete(route, event, None, self._report)
            break
        if route.on_done is not None:
            self.poll()  # acknowledge, and take a failed entry over at once
        return True

    def discard(self) -> None:
        """Forget every queued delivery: a fan-out one is dropped, a group's is settled
        as done (acknowledged), so that it is not delivered again either."""
        with self._lock:
            taken = [(route, route.queue.popleft()) for route in self._order]
            self._order.clear()
        for route, event in taken:
            complete(route, event, None, self._report)

    def deactivate(self, route: Route) -> int:
        """Stop feeding ``route``; drop what it has queued and return how many."""
        with self._lock:
            route.active = False
            self._order = deque(r for r in self._order if r is not route)
            return _drop(route)

    def shutdown(self, timeout: float) -> bool:
        """Stop taking events; drop what is queued and count it (nothing runs here).

        Returns True: nothing is left running.
        """
        with self._lock:
            self._stopped = True
            dropped = sum(_drop(route) for route in dict.fromkeys(self._order))
            self._order.clear()
        if dropped:
            self._counters.add("events_dropped", dropped)
        return True


def _drop(route: Route) -> int:
    """Empty ``route``'s queue; how many events it held (counted as dropped)."""
    dropped = len(route.queue)
    route.dropped += dropped
    route.queue.clear()
    return dropped
