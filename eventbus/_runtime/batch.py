"""Batched publishing: a bounded queue drained by one flusher thread (docs/concepts.md,
"Delivery"; docs/decisions.md, "Batching is opt-in").

With ``performance.batch_size > 1``, :meth:`EventBus.publish` encodes the event and
hands it here: the flusher sends up to ``batch_size`` messages per round trip
(:meth:`Transport.publish_many`), at the latest ``batch_interval`` seconds after the
oldest one arrived. While the transport fails, messages stay queued, in order, and
are sent when it is back (retried with the delays of
:class:`~eventbus._core.backoff.ReconnectPolicy`); when ``max_buffer`` are waiting,
:meth:`Batcher.put` raises :class:`PublishBufferFullError`. What is still queued when
the bus closes past its timeout is reported as lost, never dropped silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.stats import Counters
from eventbus._errors import PublishBufferFullError, TransportError
from eventbus._transports.base import StreamTarget, Transport

__all__ = ["LINK_WAIT", "Batcher"]

#: After a failed send, how long the flusher waits for the listener to be back.
LINK_WAIT = 5.0
#: Delays between attempts to send a batch that failed.
_RETRY = ReconnectPolicy()

log = logging.getLogger("eventbus.publish")


class Batcher:
    """Queues encoded messages and sends them in pipelined batches."""

    def __init__(
        self,
        *,
        transport: Transport,
        batch_size: int,
        interval: float,
        capacity: int,
        timeout: float,
        counters: Counters,
        report: Callable[[TransportError], None],
    ) -> None:
        self._transport = transport
        self._batch_size = batch_size
        self._interval = interval
        self._capacity = capacity
        self._timeout = timeout
        self._counters = counters
        self._report = report
        self._queue: deque[tuple[str, bytes, Sequence[StreamTarget]]] = deque()
        self._in_flight = 0
        self._flushing = 0  # callers waiting in flush(): send partial batches at once
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eventbus-flusher", daemon=True)
        self._thread.start()

    def put(self, channel: str, payload: bytes, targets: Sequence[StreamTarget] = ()) -> None:
        """Queue one message (and the group streams it is also appended to).

        Raises:
            PublishBufferFullError: ``capacity`` messages are already waiting.
        """
        with self._cond:
            if len(self._queue) >= self._capacity:
                raise PublishBufferFullError(
                    f"publish buffer full ({self._capacity} events waiting): the server is "
                    "slow or unreachable",
                    capacity=self._capacity,
                )
            self._queue.append((channel, payload, targets))
            waiting = len(self._queue)
            if waiting == 1 or waiting == self._batch_size or self._flushing:
                self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far was sent; False if ``timeout`` passed.

        A partial batch is sent at once rather than after ``batch_interval``.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            try:
                self._cond.notify_all()
                while self._queue or self._in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float) -> int:
        """Flush within ``timeout``, stop the flusher; return how many were lost."""
        self.flush(timeout)
        self._closing.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, self._timeout))
        with self._cond:
            lost = len(self._queue)
            self._queue.clear()
        if lost:
            self._counters.add("publish_errors", lost)
            log.error("bus closed with %d batched event(s) unsent: they are lost", lost)
        return lost

    def _take(self) -> list[tuple[str, bytes, Sequence[StreamTarget]]]:
        """Wait for a batch (full, or due by ``interval``); empty when closing."""
        with self._cond:
            while not self._queue:
                if self._closing.is_set():
                    return []
                self._cond.wait()
            due = time.monotonic() + self._interval
            while (
                len(self._queue) < self._batch_size
                and not self._flushing
                and not self._closing.is_set()
            ):
                remaining = due - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._in_flight = len(batch)
            return batch

    def _run(self) -> None:
        failures = 0
        groups = self._transport.groups
        while True:
            batch = self._take()
            if not batch:
                return
            try:
                if groups is not None and any(targets for _, _, targets in batch):
                    groups.route_many(batch, self._timeout)
                else:
                    self._transport.publish_many(
                        [(channel, payload) for channel, payload, _ in batch], self._timeout
                    )
            except Exception as exc:
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    self._in_flight = 0
                if isinstance(exc, TransportError):
                    self._report(exc)
                else:  # a bug, not an outage: report it loudly and go on
                    log.exception("flusher failed; %d event(s) requeued", len(batch))
                    self._report(TransportError(f"flusher failed: {exc!r}"))
                failures += 1
                if not _RETRY.wait(failures, self._closing) or not self._await_link():
                    return
                continue
            failures = 0
            self._counters.add("events_published", len(batch))
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _await_link(self) -> bool:
        """After a failure, give the listener up to ``LINK_WAIT`` s to resubscribe first,
        so that this bus's own subscriptions get the events it sends; False if closing."""
        deadline = time.monotonic() + LINK_WAIT
        while not self._transport.link_up() and time.monotonic() < deadline:
            if self._closing.wait(0.05):
                return False
        return True
