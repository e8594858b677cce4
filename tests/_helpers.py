"""Small helpers shared by the tests: waiting on conditions, recording handlers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from eventbus import Event


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class Recorder:
    """A handler that records the events it gets, with a condition to wait on."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    @property
    def types(self) -> list[str]:
        """The types received, in arrival order."""
        with self._cond:
            return [event.type for event in self.events]

    def wait(self, count: int, timeout: float = 5.0) -> list[Event]:
        """Wait until at least ``count`` events arrived; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"got {len(self.events)} of {count} events within {timeout}s: "
                        f"{[e.type for e in self.events]}"
                    )
                self._cond.wait(remaining)
            return list(self.events)
