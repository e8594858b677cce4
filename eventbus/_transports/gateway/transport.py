"""The ``http://`` / ``https://`` transport: a bus working through the Socket.IO gateway.

A service that cannot (or should not) reach Redis connects to the gateway's
``/service`` namespace with a service token (the connection is
:class:`~eventbus._transports.gateway.link.GatewayLink`); each operation of
:class:`~eventbus._transports.base.Transport` and
:class:`~eventbus._transports.base.PresenceStore` becomes one Socket.IO event with an
acknowledgement, which the gateway checks against the token's scopes and carries out
on Redis (the protocol is in docs/gateway-services.md and
:mod:`eventbus.gateway.services`).

Channel and key names travel **relative to the key prefix**: this transport strips
the bus's prefix and the gateway adds its own.

Durable groups are not available through the gateway: ``groups`` is None, and the bus
refuses a group subscription with :class:`~eventbus.BusStateError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from eventbus._core.config import ClientConfig
from eventbus._core.patterns import escape_glob
from eventbus._errors import ValidationError
from eventbus._transports.base import ClientRecord, GroupStore, MessageSink
from eventbus._transports.gateway.link import GatewayLink

__all__ = ["GatewayPresenceStore", "GatewayTransport"]

logger = logging.getLogger("eventbus.transport")


class _Names:
    """Full names (key prefix included) to names relative to the prefix, and back."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.glob_prefix = escape_glob(prefix)

    def rel(self, name: str) -> str:
        if not name.startswith(self.prefix):
            raise ValidationError(f"{name!r} is not under the key prefix {self.prefix!r}")
        return name[len(self.prefix) :]

    def rel_pattern(self, pattern: str) -> str:
        if not pattern.startswith(self.glob_prefix):
            raise ValidationError(f"{pattern!r} is not under the key prefix {self.prefix!r}")
        return pattern[len(self.glob_prefix) :]

    def keys(self, zset_key: str, hash_key: str) -> dict[str, Any]:
        return {"zset": self.rel(zset_key), "hash": self.rel(hash_key)}


class GatewayTransport:
    """The :class:`~eventbus._transports.base.Transport` over the gateway's ``/service``
    namespace, with ``presence`` through it too and no ``groups``.

    Example::

        transport = GatewayTransport(
            ClientConfig(url="http://localhost:3003", auth_token=token),
            client_name="thumbnailer:h:1:0",
            control_channel="eventbus:ctl:thumbnailer:h:1:0",
        )
        transport.start(sink)
        transport.psubscribe(["eventbus:ev:photo.*"], timeout=5.0)
        transport.publish("eventbus:ev:photo.uploaded", b"{...}", timeout=2.0)
        transport.stop(timeout=5.0)

    Args:
        config: the gateway URL, token and reconnection settings.
        client_name: the bus's client id.
        control_channel: the bus's private channel; only its key prefix is used (the
            gateway does not relay control messages).

    Raises:
        ConfigurationError: no token.
    """

    name = "gateway"
    #: Durable groups need Redis Streams, which the gateway does not expose.
    groups: GroupStore | None = None

    def __init__(self, config: ClientConfig, *, client_name: str, control_channel: str) -> None:
        self._config = config
        tail = f"ctl:{client_name}"
        self._names = _Names(
            control_channel[: -len(tail)] if control_channel.endswith(tail) else ""
        )
        self._lock = threading.Lock()  # the subscription sets
        self._channels: set[str] = set()  # relative
        self._patterns: dict[str, str] = {}  # relative -> as the bus gave it
        self._link = GatewayLink(config, deliver=self._deliver, renew=self._renew)
        self.presence = GatewayPresenceStore(self._link, self._names)

    def __repr__(self) -> str:
        return f"<GatewayTransport {self._config.url} {self._link.state.value}>"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, sink: MessageSink) -> None:
        """Connect to the gateway and start the link thread.

        Raises:
            GatewayAuthError: the gateway refused the token (``code`` says why).
            TransportConnectionError: the gateway cannot be reached.
            BusStateError: the transport was started before.
        """
        self._link.open(sink)

    def stop(self, timeout: float) -> None:
        """Disconnect and stop the link thread (joined within ``timeout``). Idempotent."""
        self._link.close(timeout)

    def listener_alive(self) -> bool:
        """Whether the link thread is running (it ends when reconnection gives up)."""
        return self._link.alive()

    def link_up(self) -> bool:
        """Whether the gateway is connected and its own Redis subscription works."""
        return self._link.up()

    def _deliver(self, sink: MessageSink, data: Any) -> None:
        """Pass one ``message`` event to ``sink`` with full names (on the read thread)."""
        prefix = self._names.prefix
        try:
            rel_key, rel_channel, payload = data["key"], data["channel"], data["payload"]
            if isinstance(payload, str):
                payload = payload.encode()
            key = self._patterns.get(rel_key) or prefix + rel_key
            channel = prefix + rel_channel
        except (TypeError, KeyError) as exc:
            logger.warning("malformed message from the gateway: %r", exc)
            return
        try:
            sink.on_message(key, channel, bytes(payload))
        except Exception:
            logger.exception("the message sink failed on a message from %r", channel)

    def _renew(self, timeout: float) -> None:
        with self._lock:
            channels, patterns = sorted(self._channels), sorted(self._patterns)
        if channels:
            self._link.call("subscribe", {"names": channels}, timeout, "subscribe")
        if patterns:
            self._link.call("psubscribe", {"names": patterns}, timeout, "psubscribe")

    # -- publishing ------------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """PUBLISH through the gateway; return the receivers Redis counted.

        Raises:
            GatewayRefusedError: outside the token's scopes (``forbidden``), or too large.
            PublishTimeoutError: no answer within ``timeout``.
            TransportConnectionError: the gateway (or its Redis) cannot be reached.
        """
        result = self._link.call(
            "publish",
            {"channel": self._names.rel(channel), "payload": payload},
            timeout,
            f"publish on {channel}",
            publish=True,
        )
        return int(result.get("receivers", 0))

    def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        """Several publishes in order, in one request; receivers per message."""
        if not messages:
            return []
        batch = [[self._names.rel(channel), payload] for channel, payload in messages]
        result = self._link.call(
            "publish_many", {"messages": batch}, timeout, "publish a batch", publish=True
        )
        return [int(n) for n in result.get("receivers", [])]

    def ping(self, timeout: float) -> float:
        """Round-trip the gateway and its Redis; return the latency in seconds."""
        started = time.perf_counter()
        self._link.call("ping", {}, timeout, "ping")
        return time.perf_counter() - started

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, channels: Sequence[str], timeout: float) -> None:
        """SUBSCRIBE exact channels through the gateway; returns once Redis confirmed."""
        rel = self._unique(channels, self._names.rel)
        if rel:
            self._link.call("subscribe", {"names": rel}, timeout, f"subscribe {rel!r}")
            with self._lock:
                self._channels.update(rel)

    def unsubscribe(self, channels: Sequence[str], timeout: float) -> None:
        """Drop exact channels."""
        rel = self._unique(channels, self._names.rel)
        if rel:
            with self._lock:
                self._channels.difference_update(rel)
            self._link.call("unsubscribe", {"names": rel}, timeout, f"unsubscribe {rel!r}")

    def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PSUBSCRIBE glob patterns through the gateway; returns once Redis confirmed."""
        unique = self._unique(patterns, str)
        rel = [self._names.rel_pattern(p) for p in unique]
        if rel:
            with self._lock:  # known before the first message can arrive
                added = [r for r in rel if r not in self._patterns]
                self._patterns.update(zip(rel, unique, strict=True))
            try:
                self._link.call("psubscribe", {"names": rel}, timeout, f"psubscribe {rel!r}")
            except BaseException:
                with self._lock:
                    for r in added:
                        self._patterns.pop(r, None)
                raise

    def punsubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """Drop glob patterns."""
        rel = self._unique(patterns, self._names.rel_pattern)
        if rel:
            with self._lock:
                for r in rel:
                    self._patterns.pop(r, None)
            self._link.call("punsubscribe", {"names": rel}, timeout, f"punsubscribe {rel!r}")

    def _unique(self, names: Sequence[str], rel: Callable[[str], str]) -> list[str]:
        if isinstance(names, str):
            raise ValidationError(f"expected a sequence of names, not the string {names!r}")
        return [rel(n) for n in dict.fromkeys(names)]


class GatewayPresenceStore:
    """The :class:`~eventbus._transports.base.PresenceStore` through the gateway (scope
    ``presence``); keys travel relative to the key prefix.

    Args:
        link: the transport's connection.
        names: the transport's prefix mapping.
    """

    def __init__(self, link: GatewayLink, names: _Names) -> None:
        self._link = link
        self._names = names

    def presence_set(
        self, zset_key: str, hash_key: str, member: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Add or refresh ``member`` in a room for ``ttl`` seconds (scope ``presence``)."""
        data = {**self._names.keys(zset_key, hash_key), "member": member, "info": info, "ttl": ttl}
        self._link.call("presence_set", data, timeout, "presence_set")

    def presence_remove(self, zset_key: str, hash_key: str, member: str, timeout: float) -> None:
        """Remove ``member`` from a room now."""
        data = {**self._names.keys(zset_key, hash_key), "member": member}
        self._link.call("presence_remove", data, timeout, "presence_remove")

    def presence_members(self, zset_key: str, hash_key: str, timeout: float) -> list[str]:
        """Live members of a room, sorted."""
        keys = self._names.keys(zset_key, hash_key)
        result = self._link.call("presence_members", keys, timeout, "presence_members")
        return sorted({str(m) for m in result.get("members", [])})

    def client_set(
        self, zset_key: str, hash_key: str, client_id: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Register or refresh this bus for ``ttl`` seconds."""
        keys = self._names.keys(zset_key, hash_key)
        data = {**keys, "member": client_id, "info": info, "ttl": ttl}
        self._link.call("client_set", data, timeout, "client_set")

    def client_remove(self, zset_key: str, hash_key: str, client_id: str, timeout: float) -> None:
        """Remove this bus's registration now."""
        data = {**self._names.keys(zset_key, hash_key), "member": client_id}
        self._link.call("client_remove", data, timeout, "client_remove")

    def client_list(self, zset_key: str, hash_key: str, timeout: float) -> list[ClientRecord]:
        """Every live registered bus (scope ``presence``)."""
        keys = self._names.keys(zset_key, hash_key)
        result = self._link.call("client_list", keys, timeout, "client_list")
        records = []
        for item in result.get("clients", []):
            client_id, info, expires_at = item
            if isinstance(info, str):
                info = info.encode()
            records.append(
                ClientRecord(
                    client_id=str(client_id), info=bytes(info), expires_at=float(expires_at)
                )
            )
        return records
