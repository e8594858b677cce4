"""Thread-safe counters and latency windows behind :meth:`EventBus.get_stats`."""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["Counters", "LatencyWindow"]


class Counters:
    """Named integer counters, safe to bump from any thread."""

    __slots__ = ("_lock", "_values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to ``name``."""
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter."""
        with self._lock:
            return dict(self._values)


class LatencyWindow:
    """The most recent ``size`` samples (seconds), for percentiles."""

    __slots__ = ("_samples",)

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def record(self, seconds: float) -> None:
        """Add one sample (``deque.append`` is atomic; no lock needed)."""
        self._samples.append(seconds)

    def percentiles_ms(self, *quantiles: float) -> tuple[float | None, ...]:
        """The given quantiles (0..1) in milliseconds, None when empty."""
        data = sorted(self._samples.copy())
        if not data:
            return tuple(None for _ in quantiles)
        last = len(data) - 1
        return tuple(round(data[min(last, int(q * len(data)))] * 1000.0, 3) for q in quantiles)
