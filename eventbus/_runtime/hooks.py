"""Error and gap hooks: how failures that no caller can catch are reported."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from eventbus._core.stats import Counters
from eventbus._errors import EventBusError
from eventbus._models import Event, Gap

__all__ = ["ErrorHook", "GapHook", "Hooks"]

log = logging.getLogger("eventbus")

ErrorHook = Callable[[EventBusError, Event | None], Any]
GapHook = Callable[[Gap], Any]


class Hooks:
    """The registered hooks of one bus; reporting never raises."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.error_hooks: list[ErrorHook] = []
        self.gap_hooks: list[GapHook] = []

    def report(
        self, error: EventBusError, event: Event | None = None, *, log_unhandled: bool = True
    ) -> None:
        """Hand ``error`` to every error hook, or log it at ERROR if there is none.

        ``log_unhandled=False`` is for errors the caller already logged (rate-limited).
        """
        hooks = self.error_hooks
        if not hooks:
            if log_unhandled:
                log.error("%s", error, exc_info=error.__cause__ or error)
            return
        for hook in hooks:
            try:
                hook(error, event)
            except Exception:
                self.counters.add("hook_errors")
                log.exception("error hook %r failed", hook)

    def report_gap(self, gap: Gap) -> None:
        """Count ``gap`` and hand it to every gap hook, or log it at WARNING."""
        self.counters.add("gaps_detected")
        hooks = self.gap_hooks
        if not hooks:
            log.warning("possible event loss: %s", gap.detail)
            return
        for hook in hooks:
            try:
                hook(gap)
            except Exception:
                self.counters.add("hook_errors")
                log.exception("gap hook %r failed", hook)
