"""Retry policy for handlers: the one module that imports tenacity.

tenacity supplies the backoff (exponential with jitter) and stop strategies; the
dispatcher drives attempts itself, because an attempt that times out continues on
another thread and must resume the same schedule. tenacity's ``RetryError`` therefore
never exists here, let alone escapes. The first attempt of a handler never touches
this module (a tenacity-wrapped call costs ~30 µs even when nothing fails).
"""

from __future__ import annotations

import threading

import attrs
import tenacity

__all__ = ["RetryPolicy"]


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently a failing handler is tried again.

    Attributes:
        max_retries: extra attempts after the first (0 = no retry).
        initial_delay: delay before the first retry, seconds.
        max_delay: the longest delay, seconds, jitter included.
        jitter: up to this many random seconds are added to each delay.
    """

    max_retries: int = 3
    initial_delay: float = 0.1
    max_delay: float = 5.0
    jitter: float = 0.1
    _wait: tenacity.wait.wait_base = attrs.field(init=False, repr=False, eq=False)
    _stop: tenacity.stop.stop_base = attrs.field(init=False, repr=False, eq=False)
    _retrying: tenacity.Retrying = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        # wait_exponential + wait_random rather than wait_exponential_jitter, whose
        # parameters changed across tenacity releases.
        wait = tenacity.wait_exponential(
            multiplier=self.initial_delay, max=self.max_delay
        ) + tenacity.wait_random(0, self.jitter)
        stop = tenacity.stop_after_attempt(self.max_retries + 1)
        object.__setattr__(self, "_wait", wait)
        object.__setattr__(self, "_stop", stop)
        object.__setattr__(self, "_retrying", tenacity.Retrying())

    @property
    def max_attempts(self) -> int:
        """Attempts in all, the first included."""
        return self.max_retries + 1

    def should_retry(self, attempt: int) -> bool:
        """Whether another attempt follows failed attempt number ``attempt`` (1-based)."""
        return not self._stop(self._call_state(attempt))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, float(self._wait(self._call_state(attempt))))

    def _call_state(self, attempt: int) -> tenacity.RetryCallState:
        """The state tenacity's strategies read, for failed attempt ``attempt``."""
        state = tenacity.RetryCallState(self._retrying, None, (), {})
        state.attempt_number = attempt
        return state

    def sleep(self, attempt: int, stop: threading.Event) -> bool:
        """Wait the delay after ``attempt``; False if ``stop`` was set meanwhile."""
        return not stop.wait(self.delay(attempt))
