"""Loss and duplicate detection for at-most-once pub/sub (pure; listener thread only).

Every envelope carries its publisher's client id and a sequence number per channel.
Per subscription key (a pattern or channel of this bus), the tracker remembers the
last number seen from each (publisher, channel): a jump is a gap, an event id seen
again within the window is a duplicate (a retried publish), and a number that goes
back means the publisher's counter restarted, which starts a new run.
"""

from __future__ import annotations

from collections import OrderedDict

from eventbus._models import Gap

__all__ = ["LossTracker"]


class LossTracker:
    """Sequence and duplicate bookkeeping, bounded in memory."""

    def __init__(self, *, max_streams: int = 50_000, dedupe_window: int = 10_000) -> None:
        self._max_streams = max_streams
        self._dedupe_window = dedupe_window
        self._last: dict[str, dict[tuple[str, str], int]] = {}
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._streams = 0

    def is_duplicate(self, key: str, event_id: str) -> bool:
        """True if ``event_id`` already arrived through ``key`` recently."""
        marker = (key, event_id)
        if marker in self._recent:
            return True
        self._recent[marker] = None
        if len(self._recent) > self._dedupe_window:
            self._recent.popitem(last=False)
        return False

    def check(self, key: str, channel: str, publisher: str, sequence: int) -> Gap | None:
        """Record ``sequence``; a :class:`Gap` if numbers were skipped before it."""
        streams = self._last.get(key)
        if streams is None:
            streams = self._last[key] = {}
        stream = (publisher, channel)
        last = streams.get(stream)
        streams[stream] = sequence
        if last is None:
            self._streams += 1
            if self._streams > self._max_streams:
                self.reset()
            return None
        if sequence <= last + 1:
            return None
        missed = sequence - last - 1
        return Gap(
            reason="sequence",
            detail=f"{missed} event(s) from {publisher} on {channel} did not arrive "
            f"(sequence {last} then {sequence})",
            channel=channel,
            publisher=publisher,
            missed=missed,
        )

    def forget(self, key: str) -> None:
        """Drop what is known about ``key`` (it was unsubscribed)."""
        streams = self._last.pop(key, None)
        if streams:
            self._streams -= len(streams)

    def reset(self) -> None:
        """Start over (after a reconnect, or when the bound is reached)."""
        self._last.clear()
        self._streams = 0
