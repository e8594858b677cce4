"""Value classes handed to users: events, results, health and statistics snapshots,
and the state and dead letters of durable groups.

All are frozen, keyword-only attrs classes; change one with :func:`attrs.evolve`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "CheckResult",
    "ClientInfo",
    "DeadLetter",
    "Event",
    "EventBusStats",
    "Gap",
    "GroupInfo",
    "GroupStats",
    "HealthCheckResult",
    "HealthStatus",
    "PublishResult",
    "SubscriptionStats",
]

HealthStatus = Literal["healthy", "degraded", "unhealthy"]


def _frozen_headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return {} if value is None else dict(value)


@attrs.frozen(kw_only=True)
class Event:
    """One event as a handler receives it.

    Treat ``data`` as read-only: every subscription of a bus shares one decoded copy.

    Example::

        @bus.on("photo.uploaded")
        def on_upload(event: Event) -> None:
            print(event.type, event.data["photoId"], event.source, event.time)

    Attributes:
        id: unique and sortable by creation time (a ULID).
        type: the event type, e.g. ``photo.uploaded``.
        data: the JSON payload.
        source: the ``service_name`` of the publishing bus.
        time: when it was published (aware, UTC).
        room: the room it was published to, or None for plain publishes and
            broadcasts (a user ``U`` is room ``user:U``).
        user: the user id of :meth:`EventBus.publish_to_user`, else None.
        broadcast: True if it came through :meth:`EventBus.broadcast`.
        headers: string metadata (``traceparent``, correlation ids...).
        delivery_attempt: 1 for the first attempt of a handler, 2 for its first retry...
        group: the durable group it was delivered through, or None for fan-out.
    """

    id: str
    type: str
    data: Any
    source: str
    time: dt.datetime
    room: str | None = None
    user: str | None = None
    broadcast: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_headers)
    delivery_attempt: int = 1
    group: str | None = None


@attrs.frozen(kw_only=True)
class ClientInfo:
    """One live bus on the same server, from its heartbeat (:meth:`EventBus.get_clients`).

    Attributes:
        client_id: ``<service_name>:<host>:<pid>:<n>``.
        service_name, host, pid: where it runs.
        transport: its transport URL (password masked).
        subscriptions: its subscription patterns.
        rooms: the rooms it joined.
        stats: its counters at its last heartbeat (the fields of
            :class:`EventBusStats`, without per-subscription detail).
        expires_at: when the record goes stale without a new heartbeat (epoch seconds).
    """

    client_id: str
    service_name: str
    host: str
    pid: int
    transport: str
    subscriptions: tuple[str, ...]
    rooms: tuple[str, ...]
    stats: Mapping[str, Any]
    expires_at: float


@attrs.frozen(kw_only=True)
class Gap:
    """Events may have been lost on the way to this bus (handed to ``on_gap`` hooks).

    Pub/sub is at-most-once; the bus cannot get lost events back, but it never loses
    them silently.

    Attributes:
        reason: ``sequence`` (a publisher's sequence number jumped),
            ``reconnect`` (the listener was disconnected; anything published
            meanwhile is lost), ``trimmed`` (a durable group's retention removed
            events before they were handled), or ``group`` (a durable group's stream
            vanished, e.g. Redis restarted without persistence, and was recreated).
        detail: a human-readable explanation.
        channel: the channel concerned, if one.
        publisher: the publishing bus's client id, for ``sequence`` gaps.
        missed: how many events are missing, when known.
    """

    reason: Literal["sequence", "reconnect", "trimmed", "group"]
    detail: str
    channel: str | None = None
    publisher: str | None = None
    missed: int | None = None


@attrs.frozen(kw_only=True)
class PublishResult:
    """What :meth:`EventBus.publish` and friends return.

    Attributes:
        event_id: the id of the published event.
        receivers: how many subscriptions the server delivered it to (Redis counts a
            bus once per matching pattern or channel); None while the publish waits in
            the batch queue.
        event_type: the type published.
        channel: the channel it went to.
    """

    event_id: str
    receivers: int | None
    event_type: str
    channel: str


@attrs.frozen(kw_only=True)
class CheckResult:
    """One named check of :meth:`EventBus.health_check`.

    Attributes:
        status: ``healthy``, ``degraded`` or ``unhealthy``.
        detail: a short explanation.
        value: the measured number, if any (a latency in ms, an age in s, a count).
    """

    status: HealthStatus
    detail: str
    value: float | None = None


@attrs.frozen(kw_only=True)
class HealthCheckResult:
    """The bus's health: the worst of its checks.

    Attributes:
        status: ``healthy``, ``degraded`` or ``unhealthy``.
        uptime: seconds since :meth:`EventBus.connect`.
        checks: each check by name (``transport``, ``listener``, ``last_message``,
            ``handlers``, ``queues``).
        service_name: this bus's service.
        client_id: this bus's client id.
        transport: the transport URL, password masked.
    """

    status: HealthStatus
    uptime: float
    checks: Mapping[str, CheckResult]
    service_name: str
    client_id: str
    transport: str

    @property
    def healthy(self) -> bool:
        """True if ``status == "healthy"``."""
        return self.status == "healthy"


@attrs.frozen(kw_only=True)
class SubscriptionStats:
    """Counters of one subscription.

    Attributes:
        id, pattern: which subscription.
        queued: events waiting now.
        received, handled, failed, retried, dropped: counts since it was made.
    """

    id: str
    pattern: str
    queued: int
    received: int
    handled: int
    failed: int
    retried: int
    dropped: int


@attrs.frozen(kw_only=True)
class GroupStats:
    """One durable group subscription of this bus.

    Attributes:
        group, pattern: which group, and its pattern.
        consumer: this bus's consumer name in the group.
        in_flight: entries read and not yet finished here.
        read: entries this consumer read (redeliveries included).
        acked: entries it acknowledged after their handler succeeded.
        redelivered: entries it took over after ``claim_idle`` (its own or a dead
            consumer's).
        dead_lettered: entries it moved to the dead-letter stream.
        lost: unacknowledged entries it found trimmed away by retention.
        backlog: entries not yet delivered to the group (last known; None before the
            first look or where the server cannot tell).
        pending: entries delivered to the group and not acknowledged (last known).
        dead_letters: entries in the group's dead-letter stream (last known).
    """

    group: str
    pattern: str
    consumer: str
    in_flight: int
    read: int
    acked: int
    redelivered: int
    dead_lettered: int
    lost: int
    backlog: int | None
    pending: int | None
    dead_letters: int | None


@attrs.frozen(kw_only=True)
class EventBusStats:
    """A snapshot of a bus's counters (:meth:`EventBus.get_stats`).

    Attributes:
        events_published: events handed to the transport.
        events_received: events delivered to this bus's subscriptions (one per
            subscription that matched).
        events_handled: handler runs that succeeded (including after retries).
        events_failed: events whose handler failed its last attempt.
        events_retried: retry attempts made.
        events_dropped: events discarded by a full subscription queue.
        events_filtered: events a subscription's filter rejected.
        duplicates_dropped: events dropped because their id arrived before (a
            retried publish).
        filter_errors: filter calls that raised (the event was skipped).
        decode_errors: messages from the wire that did not decode.
        publish_errors: publishes that raised.
        handler_timeouts: handler attempts that ran past their timeout.
        abandoned_handlers: handler threads still stuck past their timeout now.
        active_subscriptions: subscriptions now.
        rooms: rooms this bus has joined now.
        reconnects: times the listener reconnected.
        gaps_detected: times possible loss was reported to ``on_gap`` hooks.
        hook_errors: exceptions raised by error or gap hooks.
        heartbeat_errors: heartbeats (presence and client record) that failed.
        events_redelivered: durable group entries this bus took over after
            ``claim_idle`` (redeliveries).
        dead_lettered: durable group entries this bus moved to a dead-letter stream.
        group_entries_lost: durable group entries found trimmed by retention before
            they were handled (reported as gaps).
        groups_recreated: durable groups this bus found gone and recreated.
        group_errors: failed reads of group consumers (they retry).
        handler_p50_ms, handler_p99_ms: handler duration percentiles over recent
            runs (None before any run).
        delivery_p50_ms, delivery_p99_ms: publish-to-handler-start latency
            percentiles over recent events (None before any).
        subscriptions: per-subscription counters.
        groups: per durable group subscription counters.
        uptime: seconds since connect.
    """

    events_published: int = 0
    events_received: int = 0
    events_handled: int = 0
    events_failed: int = 0
    events_retried: int = 0
    events_dropped: int = 0
    events_filtered: int = 0
    duplicates_dropped: int = 0
    filter_errors: int = 0
    decode_errors: int = 0
    publish_errors: int = 0
    handler_timeouts: int = 0
    abandoned_handlers: int = 0
    active_subscriptions: int = 0
    rooms: int = 0
    reconnects: int = 0
    gaps_detected: int = 0
    hook_errors: int = 0
    heartbeat_errors: int = 0
    events_redelivered: int = 0
    dead_lettered: int = 0
    group_entries_lost: int = 0
    groups_recreated: int = 0
    group_errors: int = 0
    handler_p50_ms: float | None = None
    handler_p99_ms: float | None = None
    delivery_p50_ms: float | None = None
    delivery_p99_ms: float | None = None
    subscriptions: tuple[SubscriptionStats, ...] = ()
    groups: tuple[GroupStats, ...] = ()
    uptime: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-serialisable data."""
        return attrs.asdict(self, recurse=True)


@attrs.frozen(kw_only=True)
class DeadLetter:
    """One entry of a group's dead-letter stream.

    Attributes:
        id: the dead-letter stream's entry id.
        source_id: the entry id it had in the group stream.
        payload: the envelope.
        error: the last error, as text.
        deliveries: how many times it was delivered before it was given up.
        consumer: the consumer that gave it up.
    """

    id: str
    source_id: str
    payload: bytes
    error: str
    deliveries: int
    consumer: str


@attrs.frozen(kw_only=True)
class GroupInfo:
    """The state of one group's stream (for ``eventbus groups`` and health).

    Attributes:
        length: entries in the stream now.
        pending: entries delivered and not acknowledged.
        consumers: consumers the group knows.
        lag: entries not yet delivered to the group; None when the server cannot tell.
        oldest_pending_age: seconds since the oldest pending entry was delivered.
        dead_letters: entries in the dead-letter stream.
        trimmed_unread: entries retention trimmed from the stream before the group read
            them and not yet reported as lost by a consumer (each loss is reported
            once, in ``group_entries_lost``); None when the server cannot tell.
    """

    length: int
    pending: int
    consumers: int
    lag: int | None
    oldest_pending_age: float | None
    dead_letters: int
    trimmed_unread: int | None = None
