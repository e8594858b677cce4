"""Names of every Redis key and channel the bus uses (``docs/wire-format.md``,
"Redis keys and channels").

Every name starts with the configured ``key_prefix``. Keys that one command or script
touches together share a Redis Cluster hash tag (``{...}``), so the same layout runs
unchanged on Redis Cluster. Nothing here does I/O.
"""

from __future__ import annotations

import attrs

from eventbus._core.patterns import escape_glob

__all__ = ["Keyspace"]


@attrs.frozen(kw_only=True)
class Keyspace:
    """Builds key and channel names under one prefix.

    Example::

        >>> ks = Keyspace(prefix="eventbus:")
        >>> ks.event_channel("photo.uploaded")
        'eventbus:ev:photo.uploaded'
        >>> ks.presence_keys("photo:1")
        ('eventbus:presence:{photo:1}:z', 'eventbus:presence:{photo:1}:h')
    """

    prefix: str = "eventbus:"

    def event_channel(self, event_type: str) -> str:
        """The channel a plain ``publish`` of ``event_type`` goes to."""
        return f"{self.prefix}ev:{event_type}"

    def event_pattern(self, pattern: str) -> str:
        """The ``PSUBSCRIBE`` pattern for a subscription pattern (prefix escaped)."""
        return f"{escape_glob(self.prefix)}ev:{pattern}"

    def event_type_of(self, channel: str) -> str | None:
        """The event type an event channel carries, or None for another channel."""
        head = f"{self.prefix}ev:"
        return channel[len(head) :] if channel.startswith(head) else None

    def room_channel(self, room: str) -> str:
        """The channel of a room (a user ``U`` is room ``user:U``)."""
        return f"{self.prefix}room:{room}"

    def room_of(self, channel: str) -> str | None:
        """The room a room channel carries, or None for another channel."""
        head = f"{self.prefix}room:"
        return channel[len(head) :] if channel.startswith(head) else None

    @property
    def broadcast_channel(self) -> str:
        """The channel of :meth:`EventBus.broadcast`."""
        return f"{self.prefix}broadcast"

    def presence_keys(self, room: str) -> tuple[str, str]:
        """(sorted set member -> expiry ms, hash member -> info) of a room."""
        return (f"{self.prefix}presence:{{{room}}}:z", f"{self.prefix}presence:{{{room}}}:h")

    @property
    def client_keys(self) -> tuple[str, str]:
        """(sorted set client id -> expiry ms, hash client id -> info) of live buses."""
        return (f"{self.prefix}{{clients}}:z", f"{self.prefix}{{clients}}:h")

    @property
    def groups_registry(self) -> str:
        """The hash of durable groups: group name -> its spec (pattern, options) as JSON."""
        return f"{self.prefix}groups"

    @property
    def groups_channel(self) -> str:
        """The channel on which a bus announces a newly registered group."""
        return f"{self.prefix}groups:changed"

    def group_stream(self, group: str) -> str:
        """The stream of durable group ``group`` (its consumer group has the same name)."""
        return f"{self.prefix}group:{{{group}}}"

    def dead_letter_stream(self, group: str) -> str:
        """The dead-letter stream of ``group``; same hash tag as its stream."""
        return f"{self.prefix}dlq:{{{group}}}"

    def control_channel(self, client_id: str) -> str:
        """A bus's private channel (listener wake-ups and heartbeat round trips)."""
        return f"{self.prefix}ctl:{client_id}"
