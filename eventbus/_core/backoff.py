"""How every reconnecting loop waits between attempts: one policy, one formula.

The Redis listener, the ``http(s)://`` transport, the durable-group readers and the
gateway's Redis subscriptions all renew a lost link the same way: the first attempt
at once, then exponential delays up to a cap, each drawn uniformly from its upper half
("equal jitter") so that many processes that lost the same server do not come back in
step. Threads wait with :meth:`ReconnectPolicy.wait` on their stop event (woken at once
by a shutdown); asyncio loops sleep :meth:`ReconnectPolicy.delay` themselves.

This is not :class:`~eventbus._core.retry.RetryPolicy`: that one is the user's setting
for a failing *handler* (a bounded number of attempts, built on tenacity), this one
retries a *link* for as long as the process runs.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import attrs

__all__ = ["ReconnectPolicy"]


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """Delays between attempts to renew a lost link.

    Attempt 0 follows the loss at once; attempt ``n >= 1`` waits a random time in
    ``[d/2, d]`` with ``d = min(cap, first * 2 ** (n - 1))``.

    Attributes:
        first: the delay before attempt 1, seconds.
        cap: the longest delay, seconds.
    """

    first: float = attrs.field(default=0.05, validator=_positive)
    cap: float = attrs.field(default=2.0, validator=_positive)

    def delay(
        self, attempt: int, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based: attempt 0 waits nothing)."""
        if attempt <= 0:
            return 0.0
        ceiling = min(self.cap, self.first * 2 ** min(attempt - 1, 62))
        return uniform(ceiling / 2, ceiling)

    def wait(self, attempt: int, stop: threading.Event) -> bool:
        """Wait before attempt ``attempt``; False if ``stop`` was set (give up), else True."""
        return not stop.wait(self.delay(attempt))
