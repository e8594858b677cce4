"""Limits on what clients may do: connection rate per IP and message size.

Everything here is pure and runs on the event loop's thread (no locks needed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectRateLimiter", "payload_size"]

#: Buckets idle this long are full again and forgotten (bounds memory).
_FORGET_AFTER = 300.0


class ConnectRateLimiter:
    """A token bucket per client IP: ``rate`` connections per second, ``burst`` at once.

    ``rate=0`` disables the limit. Example::

        limiter = ConnectRateLimiter(rate=20.0, burst=40)
        if not limiter.allow("203.0.113.7"):
            ...  # refuse with "rate_limited"
    """

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last refill)
        self._last_sweep = clock()

    @property
    def enabled(self) -> bool:
        """False when ``rate`` is 0 (every connection allowed)."""
        return self._rate > 0

    def allow(self, ip: str) -> bool:
        """Take one token of ``ip``'s bucket; False when it is empty."""
        if not self.enabled:
            return True
        now = self._clock()
        self._sweep(now)
        tokens, last = self._buckets.get(ip, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return False
        self._buckets[ip] = (tokens - 1.0, now)
        return True

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _FORGET_AFTER:
            return
        self._last_sweep = now
        idle = [ip for ip, (_, last) in self._buckets.items() if now - last > _FORGET_AFTER]
        for ip in idle:
            del self._buckets[ip]


def payload_size(data: Any) -> int:
    """The size in bytes of ``data`` as JSON (what the client sent, re-encoded).

    Values that JSON cannot encode (python-socketio only hands over decoded JSON, so
    these do not occur from the wire) count as infinitely large.
    """
    if data is None:
        return 0
    if isinstance(data, str):
        return len(data.encode("utf-8", "surrogatepass"))
    try:
        return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError, RecursionError):
        return 1 << 62
