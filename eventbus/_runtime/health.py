"""The checks behind :meth:`EventBus.health_check` (docs/concepts.md, "Health and
statistics"; what each check catches: docs/failure-modes.md, "What to watch")."""

from __future__ import annotations

import time
from collections.abc import Sequence

from eventbus._errors import TransportError
from eventbus._models import CheckResult, HealthStatus
from eventbus._transports.base import Transport

__all__ = ["DROP_WINDOW", "HEALTH_PING_TIMEOUT", "SLOW_PING", "check_health", "worst"]

#: The deadline of the ping of a health check, seconds: a hung server is reported
#: within it rather than after the full operation timeout.
HEALTH_PING_TIMEOUT = 1.0
#: A ping slower than this (seconds) makes the bus ``degraded``.
SLOW_PING = 0.1
#: A queue overflow this recent (seconds) makes the bus ``degraded``.
DROP_WINDOW = 60.0

_RANK: dict[HealthStatus, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def worst(results: dict[str, CheckResult]) -> HealthStatus:
    """The worst status among ``results`` (``healthy`` when empty)."""
    status: HealthStatus = "healthy"
    for result in results.values():
        if _RANK[result.status] > _RANK[status]:
            status = result.status
    return status


def check_health(
    *,
    transport: Transport | None,
    timeout: float,
    last_message_at: float | None,
    abandoned: int,
    dropped: int,
    last_drop_at: float | None,
    groups: int = 0,
    dead_groups: Sequence[str] = (),
) -> dict[str, CheckResult]:
    """Run every check; never raises. ``transport`` is None when not connected."""
    if transport is None:
        return {"transport": CheckResult(status="unhealthy", detail="not connected")}
    checks: dict[str, CheckResult] = {}
    try:
        latency = transport.ping(timeout)
    except TransportError as exc:
        checks["transport"] = CheckResult(status="unhealthy", detail=f"ping failed: {exc}")
    else:
        slow = latency > SLOW_PING
        checks["transport"] = CheckResult(
            status="degraded" if slow else "healthy",
            detail=f"{transport.name} ping {latency * 1000:.2f} ms" + (" (slow)" if slow else ""),
            value=round(latency * 1000, 3),
        )
    if not transport.listener_alive():
        checks["listener"] = CheckResult(status="unhealthy", detail="listener thread is dead")
    elif not transport.link_up():
        checks["listener"] = CheckResult(
            status="unhealthy", detail="listener link lost; reconnecting"
        )
    else:
        checks["listener"] = CheckResult(status="healthy", detail="listener connected")
    if last_message_at is None:
        checks["last_message"] = CheckResult(status="healthy", detail="no message yet")
    else:
        age = time.monotonic() - last_message_at
        checks["last_message"] = CheckResult(
            status="healthy", detail=f"last message {age:.1f}s ago", value=round(age, 3)
        )
    checks["handlers"] = CheckResult(
        status="degraded" if abandoned else "healthy",
        detail=f"{abandoned} handler thread(s) stuck past their timeout"
        if abandoned
        else "no stuck handler",
        value=float(abandoned),
    )
    recent = last_drop_at is not None and time.monotonic() - last_drop_at < DROP_WINDOW
    if last_drop_at is None:
        detail = "no event dropped"
    else:
        detail = (
            f"{dropped} event(s) dropped by full queues, the last "
            f"{time.monotonic() - last_drop_at:.0f}s ago"
        )
    checks["queues"] = CheckResult(
        status="degraded" if recent else "healthy", detail=detail, value=float(dropped)
    )
    if groups:
        checks["groups"] = CheckResult(
            status="unhealthy" if dead_groups else "healthy",
            detail=f"consumer thread of {', '.join(dead_groups)} is dead"
            if dead_groups
            else f"{groups} group consumer(s) running",
            value=float(groups),
        )
    return checks
