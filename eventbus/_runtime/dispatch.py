"""Running handlers: per-subscription queues feeding one thread pool.

(docs/decisions.md, "Delivery and threads".) The bus talks to its handler runner
through :class:`~eventbus._runtime.wiring.Executor`: this module's :class:`Dispatcher`,
or the testing kit's :class:`~eventbus._runtime.inline.InlineExecutor`, which runs the
same deliveries in the thread that asks for them.

The listener thread calls :meth:`Dispatcher.offer`, which only appends to the
subscription's bounded queue and, if fewer than ``concurrency`` drainers run for it,
submits one to the pool: at most one thread wake-up between the socket and a handler.
A drainer takes events from its subscription's queue one at a time until it is empty,
so a subscription with ``concurrency=1`` sees its events in order, one at a time.

Failures: the first attempt runs the handler directly; a failed attempt is retried
per the subscription's :class:`RetryPolicy` (sleeps that shutdown interrupts); the
last failure goes to the error hooks as :class:`HandlerError`.

Timeouts: a thread cannot be killed. An attempt that runs past ``timeout`` is marked
abandoned by the watchdog thread, counted as a failed attempt, and a new drainer takes
over the subscription (retrying the event if retries remain); when the stuck handler
finally returns, its thread notices it was abandoned and leaves quietly.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import attrs

from eventbus._core.config import OverflowPolicy
from eventbus._core.patterns import Pattern
from eventbus._core.retry import RetryPolicy
from eventbus._core.stats import Counters, LatencyWindow
from eventbus._errors import EventBusError, HandlerError, HandlerTimeoutError
from eventbus._models import Event, SubscriptionStats

__all__ = [
    "ConsumerLoop",
    "Dispatcher",
    "ErrorReporter",
    "Route",
    "attempt_event",
    "complete",
    "handler_failure",
]

log = logging.getLogger("eventbus.dispatch")
#: One DEBUG record per event whose handling ended ("handled", "failed") or failed an
#: attempt that will be retried ("retry"); its fields are in the record's ``handling``
#: attribute (see :func:`_note`). ``eventbus worker`` turns them into INFO lines.
events_log = logging.getLogger("eventbus.events")

Handler = Callable[[Event], Any]
ErrorReporter = Callable[[EventBusError, Event | None], None]
#: Called once per event when its handling is over: with None on success, with the
#: reported error after the last failed attempt (durable groups ack or give up there).
Completion = Callable[[Event, EventBusError | None], None]


class Route:
    """The runtime side of one subscription: its matcher, queue and counters."""

    def __init__(
        self,
        *,
        sub_id: str,
        pattern: Pattern,
        handler: Handler,
        event_filter: Callable[[Event], bool] | None,
        retry: RetryPolicy,
        timeout: float | None,
        concurrency: int,
        queue_size: int,
        overflow: OverflowPolicy,
        block_timeout: float,
        on_done: Completion | None = None,
    ) -> None:
        self.id = sub_id
        self.pattern = pattern
        self.handler = handler
        self.filter = event_filter
        self.retry = retry
        self.timeout = timeout
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.overflow = overflow
        self.block_timeout = block_timeout
        self.on_done = on_done
        self.queue: deque[Event] = deque()
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.drainers = 0
        self.active = True
        self.received = 0
        self.handled = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0

    def reset_after_fork(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held them), and
        none of the parent's queued events (the parent handles those)."""
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.queue.clear()
        self.drainers = 0

    def stats(self) -> SubscriptionStats:
        """A snapshot of this subscription's counters."""
        return SubscriptionStats(
            id=self.id,
            pattern=self.pattern.source,
            queued=len(self.queue),
            received=self.received,
            handled=self.handled,
            failed=self.failed,
            retried=self.retried,
            dropped=self.dropped,
        )


class ConsumerLoop(Protocol):
    """A durable group's consumer, as an :class:`Executor` runs its loop."""

    @property
    def group(self) -> str:
        """The group it consumes."""
        ...

    def start(self) -> None:
        """Run the loop on a thread of its own until the consumer is stopped."""
        ...

    def alive(self) -> bool:
        """Whether the loop runs (stopped consumers are not)."""
        ...

    def poll(self, *, block: float, claim_idle: float | None) -> int:
        """Run one round of the loop in the calling thread; how many new entries it read."""
        ...


def attempt_event(event: Event, number: int) -> Event:
    """``event`` as attempt ``number`` of its handling sees it (``delivery_attempt``)."""
    if number == 1:
        return event
    return attrs.evolve(event, delivery_attempt=event.delivery_attempt + number - 1)


def handler_failure(
    route: Route, event: Event, attempts: int, error: BaseException | None
) -> HandlerError:
    """The error reported when ``route``'s handler gave up on ``event``.

    A :class:`HandlerTimeoutError` when ``error`` is None (the last attempt timed out),
    else a :class:`HandlerError` whose ``__cause__`` is ``error``.
    """
    cls = HandlerTimeoutError if error is None else HandlerError
    reason = f"timed out after {route.timeout}s" if error is None else repr(error)
    failure = cls(
        f"handler of subscription {route.id} ({route.pattern.source}) failed on event "
        f"{event.id} ({event.type}) after {attempts} attempt(s): {reason}",
        subscription_id=route.id,
        event_id=event.id,
        event_type=event.type,
        attempts=attempts,
    )
    failure.__cause__ = error
    return failure


def complete(
    route: Route, event: Event, error: EventBusError | None, report: ErrorReporter
) -> None:
    """Tell the route's owner (a group consumer) that ``event`` is done; a failure
    there is reported, never raised."""
    if route.on_done is None:
        return
    try:
        route.on_done(event, error)
    except Exception as exc:
        log.exception("completing event %s of %s failed", event.id, route.id)
        failure = EventBusError(f"completing event {event.id} of {route.id} failed: {exc!r}")
        failure.__cause__ = exc
        report(failure, event)


def _note(
    route: Route,
    event: Event,
    outcome: str,
    attempt: int,
    started: float | None,
    error: BaseException | None,
) -> None:
    """Log one :data:`events_log` record about ``event`` (if that logger wants DEBUG).

    ``record.handling`` holds ``outcome``, ``subscription``, ``pattern``, ``event_id``,
    ``event_type``, ``group``, ``attempt``, ``duration`` (seconds since the handling of
    the event began, None after a timeout) and ``error`` (a repr, or None).
    """
    if not events_log.isEnabledFor(logging.DEBUG):
        return
    duration = None if started is None else time.perf_counter() - started
    handling = {
        "outcome": outcome,
        "subscription": route.id,
        "pattern": route.pattern.source,
        "event_id": event.id,
        "event_type": event.type,
        "group": event.group,
        "attempt": attempt,
        "duration": duration,
        "error": None if error is None else repr(error),
    }
    events_log.debug(
        "%s %s %s by %s (%s), attempt %d",
        outcome,
        event.type,
        event.id,
        route.id,
        route.pattern.source,
        attempt,
        extra={"handling": handling},
    )


@attrs.define(eq=False)
class _Attempt:
    """One running handler attempt that has a deadline."""

    route: Route
    base: Event  # as queued; its delivery_attempt is the first attempt's number
    event: Event  # as this attempt's handler got it
    number: int
    deadline: float
    done: bool = False
    abandoned: bool = False


class Dispatcher:
    """Owns the handler pool and the timeout watchdog of one bus."""

    def __init__(
        self,
        *,
        threads: int,
        counters: Counters,
        handler_latency: LatencyWindow,
        delivery_latency: LatencyWindow,
        report: ErrorReporter,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="eventbus-handler")
        self._counters = counters
        self._handler_latency = handler_latency
        self._delivery_latency = delivery_latency
        self._report = report
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0  # drainers running or queued in the pool
        self._abandoned = 0
        #: events dropped by full queues, and the monotonic time of the newest such drop
        self.overflow_drops = 0
        self.last_drop_at: float | None = None
        self._deadlines: list[tuple[float, int, _Attempt]] = []
        self._tiebreak = itertools.count()
        self._watch = threading.Condition()
        self._watchdog: threading.Thread | None = None

    @property
    def abandoned(self) -> int:
        """Handler threads stuck past their timeout right now."""
        return self._abandoned

    # -- the listener side -------------------------------------------------------------

    def offer(self, route: Route, event: Event) -> None:
        """Queue ``event`` for ``route`` (listener thread); never runs user code."""
        with route.lock:
            if not route.active:
                return
            route.received += 1
            if len(route.queue) >= route.queue_size and not self._make_room(route):
                return
            route.queue.append(event)
            if route.drainers >= route.concurrency:
                return
            route.drainers += 1
        self._start_drainer(route, None)

    def run_consumer(self, consumer: ConsumerLoop) -> None:
        """Run ``consumer``'s loop on a thread of its own."""
        consumer.start()

    def _make_room(self, route: Route) -> bool:
        """Apply the overflow policy to a full queue (lock held); False drops ``event``."""
        if route.overflow == "drop_oldest":
            route.queue.popleft()
        elif route.overflow == "block":
            deadline = time.monotonic() + route.block_timeout
            while len(route.queue) >= route.queue_size and route.active:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    break
                route.space.wait(remaining)
            if not route.active:  # unsubscribed while we waited: the event goes nowhere
                route.dropped += 1
                self._counters.add("events_dropped")
                return False
            if len(route.queue) < route.queue_size:
                return True
        route.dropped += 1
        self.overflow_drops += 1
        self.last_drop_at = time.monotonic()
        self._counters.add("events_dropped")
        if route.dropped == 1 or route.dropped % 1000 == 0:
            log.warning(
                "subscription %s (%s) queue full (%d): %d event(s) dropped so far (%s)",
                route.id,
                route.pattern.source,
                route.queue_size,
                route.dropped,
                route.overflow,
            )
        return route.overflow == "drop_oldest"

    def _start_drainer(self, route: Route, resume: _Attempt | None) -> None:
        with self._idle:
            self._busy += 1
        try:
            self._pool.submit(self._drain, route, resume)
        except RuntimeError:  # pool shut down: the bus is closing
            with route.lock:
                route.drainers -= 1
            self._release()

    def _release(self) -> None:
        with self._idle:
            self._busy -= 1
            if self._busy == 0:
                self._idle.notify_all()

    # -- the pool side -----------------------------------------------------------------

    def _drain(self, route: Route, resume: _Attempt | None) -> None:
        try:
            if resume is not None:
                # Take over from an abandoned attempt: back off, then try again.
                if not route.retry.sleep(resume.number, self._stopping):
                    self._fail(route, resume.base, resume.event, resume.number, None)
                elif not self._finish(route, resume.base, resume.number + 1):
                    return  # abandoned again: the next drainer owns the route now
            while True:
                with route.lock:
                    if not route.queue or not route.active or self._stopping.is_set():
                        route.drainers -= 1
                        return
                    event = route.queue.popleft()
                    if route.overflow == "block":
                        route.space.notify()
                if not self._finish(route, event, 1):
                    return
        finally:
            self._release()

    def _finish(self, route: Route, event: Event, number: int) -> bool:
        """Run attempts from ``number`` until success or the last failure.

        Attempt ``n`` gets ``event`` with ``delivery_attempt`` raised by ``n - 1``.
        Returns False if this thread was abandoned (another drainer took over).
        """
        if number == 1:
            self._delivery_latency.record(max(0.0, time.time() - event.time.timestamp()))
        started = time.perf_counter()
        while True:
            current = attempt_event(event, number)
            outcome, error = self._attempt(route, event, current, number)
            if outcome == "abandoned":
                return False
            if outcome == "ok":
                with route.lock:
                    route.handled += 1
                self._counters.add("events_handled")
                _note(route, current, "handled", number, started, None)
                complete(route, event, None, self._report)
                return True
            if not route.retry.should_retry(number) or self._stopping.is_set():
                self._fail(route, event, current, number, error, started)
                return True
            with route.lock:
                route.retried += 1
            self._counters.add("events_retried")
            _note(route, current, "retry", number, started, error)
            if not route.retry.sleep(number, self._stopping):
                self._fail(route, event, current, number, error, started)
                return True
            number += 1

    def _attempt(
        self, route: Route, base: Event, event: Event, number: int
    ) -> tuple[str, BaseException | None]:
        attempt = None
        if route.timeout is not None:
            attempt = _Attempt(route, base, event, number, time.monotonic() + route.timeout)
            self._watch_attempt(attempt)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            route.handler(event)
        except Exception as exc:
            error = exc
        self._handler_latency.record(time.perf_counter() - started)
        if attempt is not None:
            with route.lock:
                if attempt.abandoned:
                    abandoned = True
                else:
                    attempt.done = True
                    abandoned = False
            if abandoned:
                with self._watch:
                    self._abandoned -= 1
                log.warning(
                    "handler of subscription %s returned %.1fs after its %.1fs timeout "
                    "(event %s); its result was discarded",
                    route.id,
                    time.monotonic() - attempt.deadline,
                    route.timeout,
                    event.id,
                )
                return "abandoned", None
        if error is None:
            return "ok", None
        if number == 1 or not route.retry.should_retry(number):
            log.debug("handler of %s failed on %s (attempt %d)", route.id, event.id, number)
        return "failed", error

    def _fail(
        self,
        route: Route,
        base: Event,
        event: Event,
        attempts: int,
        error: BaseException | None,
        started: float | None = None,
    ) -> None:
        with route.lock:
            route.failed += 1
        self._counters.add("events_failed")
        _note(route, event, "failed", attempts, started, error)
        failure = handler_failure(route, event, attempts, error)
        self._report(failure, event)
        complete(route, base, failure, self._report)

    # -- the timeout watchdog ----------------------------------------------------------

    def _watch_attempt(self, attempt: _Attempt) -> None:
        with self._watch:
            heapq.heappush(self._deadlines, (attempt.deadline, next(self._tiebreak), attempt))
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._run_watchdog, name="eventbus-timeouts", daemon=True
                )
                self._watchdog.start()
            elif self._deadlines[0][2] is attempt:
                self._watch.notify()

    def _run_watchdog(self) -> None:
        while True:
            expired: list[_Attempt] = []
            with self._watch:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                while self._deadlines and self._deadlines[0][0] <= now:
                    expired.append(heapq.heappop(self._deadlines)[2])
                if not expired:
                    wait = self._deadlines[0][0] - now if self._deadlines else None
                    self._watch.wait(wait)
                    continue
            for attempt in expired:
                self._expire(attempt)

    def _expire(self, attempt: _Attempt) -> None:
        route = attempt.route
        with route.lock:
            if attempt.done:
                return
            attempt.abandoned = True
        with self._watch:
            self._abandoned += 1
        self._counters.add("handler_timeouts")
        log.warning(
            "handler of subscription %s ran past its %.1fs timeout on event %s (attempt %d); "
            "its thread is abandoned and the subscription goes on",
            route.id,
            route.timeout,
            attempt.event.id,
            attempt.number,
        )
        if route.retry.should_retry(attempt.number) and not self._stopping.is_set():
            with route.lock:
                route.retried += 1
            self._counters.add("events_retried")
            self._start_drainer(route, attempt)  # it backs off, then retries
        else:
            self._fail(route, attempt.base, attempt.event, attempt.number, None)
            self._start_drainer(route, None)  # it takes over the abandoned drainer's slot

    # -- lifecycle ---------------------------------------------------------------------

    def deactivate(self, route: Route) -> int:
        """Stop feeding ``route``; drop what it has queued and return how many."""
        with route.lock:
            route.active = False
            dropped = len(route.queue)
            route.dropped += dropped
            route.queue.clear()
            route.space.notify_all()
        return dropped

    def drain(self, timeout: float) -> bool:
        """Wait until no drainer runs or is queued; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def shutdown(self, timeout: float) -> bool:
        """Finish queued events within ``timeout``, then stop every thread.

        Returns False if events were still running or queued when time ran out.
        """
        finished = self.drain(timeout)
        self._stopping.set()
        with self._watch:
            self._watch.notify_all()
        self._pool.shutdown(wait=finished, cancel_futures=True)
        if self._watchdog is not None:
            self._watchdog.join(timeout=1.0)
        return finished
