"""The ``http://`` / ``https://`` transport: a bus working through the Socket.IO gateway.

A service that cannot (or should not) reach Redis connects to the gateway's
``/service`` namespace with python-socketio's synchronous client and a service token;
each :class:`~eventbus._transports.base.Transport` operation becomes one Socket.IO
event with an acknowledgement, which the gateway checks against the token's scopes
and carries out on Redis (see :mod:`eventbus.gateway.services` for the protocol).

Channel and key names travel **relative to the key prefix**: this transport strips
the bus's prefix and the gateway adds its own.

Threads: python-socketio's read thread delivers messages (in order: this module
makes the Engine.IO client hand every packet over on its read thread, instead of one
new thread per packet) and acknowledgements; the ``eventbus-gateway-link`` thread
waits for the connection to drop, reconnects with exponential backoff and jitter,
renews every subscription, and reports ``DISCONNECTED``/``RECONNECTED`` to the sink.
A call made while the link is down waits for it, up to its own timeout; nothing is
emitted on a namespace that is not connected (no ``BadNamespaceError``).

Durable groups (:class:`~eventbus._transports.base.GroupStore`) are not available
through the gateway: this class does not implement them, and the bus refuses a group
subscription with :class:`~eventbus.BusStateError`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import engineio
import socketio
import websocket

from eventbus._core.config import ClientConfig
from eventbus._core.patterns import escape_glob
from eventbus._errors import (
    BusStateError,
    GatewayAuthError,
    GatewayRefusedError,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
    ValidationError,
)
from eventbus._transports.base import ClientRecord, LinkEvent, LinkState, MessageSink

__all__ = ["GatewayTransport"]

logger = logging.getLogger("eventbus.transport")

NAMESPACE: Final = "/service"
_BACKOFF_CAP: Final = 10.0
#: Error codes of an acknowledgement that mean "the gateway cannot reach Redis now".
_UNAVAILABLE: Final = ("unavailable",)


def _close_websocket(ws: Any) -> None:
    """Close a websocket-client socket for good (``close()`` alone skips the socket of
    a connection the server already closed)."""
    try:
        ws.close(timeout=0.5)
    except Exception:  # already broken
        logger.debug("closing a gateway websocket failed", exc_info=True)
    try:
        ws.shutdown()
    except Exception:
        logger.debug("shutting a gateway websocket down failed", exc_info=True)


class _OrderedEngineIO(engineio.Client):  # type: ignore[misc]
    """Engine.IO's client runs every received packet in a new thread, so messages
    (and the attachments of one binary packet) could be handled out of order; here
    they are handled on the read thread, in order."""

    def _receive_packet(self, pkt: Any) -> None:
        if pkt.packet_type == engineio.packet.MESSAGE:
            self._trigger_event("message", pkt.data, run_async=False)
        else:
            super()._receive_packet(pkt)

    def _read_loop_websocket(self) -> None:
        # The stock loop forgets the socket when the server closes it, unclosed.
        ws = self.ws
        try:
            super()._read_loop_websocket()
        finally:
            if ws is not None:
                _close_websocket(ws)


class _SocketIOClient(socketio.Client):  # type: ignore[misc]
    """python-socketio's client with ordered delivery (see :class:`_OrderedEngineIO`)."""

    def _engineio_client_class(self) -> type[engineio.Client]:
        return _OrderedEngineIO

    def _handle_disconnect(self, namespace: str | None) -> None:
        # The stock method joins the read thread, which here is the current thread.
        if not getattr(self, "connected", False):
            return
        namespace = namespace or "/"
        self._trigger_event("disconnect", namespace, self.reason.SERVER_DISCONNECT)
        self._trigger_event("__disconnect_final", namespace)
        self.namespaces.pop(namespace, None)
        if not self.namespaces:
            self.connected = False
            self.eio.disconnect(abort=True)


class _Waiter:
    """One acknowledgement awaited by a caller."""

    __slots__ = ("done", "lost", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.lost = False

    def ack(self, *args: Any) -> None:
        self.result = args[0] if args else None
        self.done.set()

    def fail(self) -> None:
        self.lost = True
        self.done.set()


class GatewayTransport:
    """The :class:`~eventbus._transports.base.Transport` over the gateway's ``/service``
    namespace.

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

    def __init__(self, config: ClientConfig, *, client_name: str, control_channel: str) -> None:
        self._config = config
        tail = f"ctl:{client_name}"
        self._prefix = control_channel[: -len(tail)] if control_channel.endswith(tail) else ""
        self._glob_prefix = escape_glob(self._prefix)
        self._state = "new"  # new -> started -> stopped
        self._lock = threading.Lock()  # start/stop and the subscription sets
        self._report_lock = threading.Lock()
        self._emit_lock = threading.Lock()  # emits and the pending table
        self._sio: _SocketIOClient | None = None
        self._connected = threading.Event()  # the namespace is connected now
        self._dropped = threading.Event()  # the current connection ended
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: MessageSink | None = None
        self._pending: dict[int, _Waiter] = {}
        self._channels: set[str] = set()  # relative
        self._patterns: dict[str, str] = {}  # relative -> as the bus gave it
        self._refusal: tuple[str, str] | None = None
        self._remote_up = True  # the gateway's own Redis subscription
        self._down_reported = False

    def __repr__(self) -> str:
        return f"<GatewayTransport {self._config.url} {self._state}>"

    # -- names -----------------------------------------------------------------------------

    def _rel(self, name: str) -> str:
        if not name.startswith(self._prefix):
            raise ValidationError(f"{name!r} is not under the key prefix {self._prefix!r}")
        return name[len(self._prefix) :]

    def _rel_pattern(self, pattern: str) -> str:
        if not pattern.startswith(self._glob_prefix):
            raise ValidationError(f"{pattern!r} is not under the key prefix {self._prefix!r}")
        return pattern[len(self._glob_prefix) :]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, sink: MessageSink) -> None:
        """Connect to the gateway and start the link thread.

        Raises:
            GatewayAuthError: the gateway refused the token (``code`` says why).
            TransportConnectionError: the gateway cannot be reached.
            BusStateError: the transport was started before.
        """
        with self._lock:
            if self._state != "new":
                raise BusStateError(f"the gateway transport cannot start: it is {self._state}")
            self._sink = sink
            self._connect(self._config.timeout)
            self._state = "started"
            self._thread = threading.Thread(
                target=self._run, name="eventbus-gateway-link", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Disconnect and stop the link thread (joined within ``timeout``). Idempotent."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        self._stop_event.set()
        self._dropped.set()
        sio = self._sio
        if sio is not None:
            try:
                sio.disconnect()
            except Exception:  # closing a broken connection; nothing left to do
                logger.debug("disconnecting from the gateway failed", exc_info=True)
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("gateway link thread did not stop within %ss", timeout)
        self._fail_pending()

    def listener_alive(self) -> bool:
        """Whether the link thread is running (it ends when reconnection gives up)."""
        return self._thread is not None and self._thread.is_alive()

    def link_up(self) -> bool:
        """Whether the gateway is connected and its own Redis subscription works."""
        return self._connected.is_set() and self._remote_up and self.listener_alive()

    # -- the connection --------------------------------------------------------------------

    def _connect(self, timeout: float) -> None:
        """Open one connection (a fresh client each time) and wait for the namespace."""
        cfg = self._config
        sockets: list[Any] = []

        def tracked(**options: Any) -> Any:
            # Engine.IO drops a websocket it fails to open without closing it.
            ws = websocket.WebSocket(**options)
            sockets.append(ws)
            return ws

        sio = _SocketIOClient(
            reconnection=False,
            handle_sigint=False,
            request_timeout=max(1.0, timeout),
            websocket_extra_options={"class_": tracked},
        )
        sio.on("connect", self._on_connect, namespace=NAMESPACE)
        sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        sio.on("disconnect", lambda *_: self._on_disconnect(sio), namespace=NAMESPACE)
        sio.on("message", self._on_message, namespace=NAMESPACE)
        sio.on("link", self._on_link, namespace=NAMESPACE)
        sio.on("error", self._on_error, namespace=NAMESPACE)
        self._refusal = None
        self._dropped.clear()
        self._sio = sio
        try:
            sio.connect(
                cfg.url,
                auth={"token": cfg.auth_token},
                transports=["websocket"],
                namespaces=[NAMESPACE],
                wait=True,
                wait_timeout=timeout,
            )
        except (socketio.exceptions.ConnectionError, ValueError, OSError) as exc:
            self._connected.clear()
            for ws in sockets:
                _close_websocket(ws)
            refusal = self._last_refusal()
            if refusal is not None:
                code, message = refusal
                raise GatewayAuthError(
                    f"the gateway at {cfg.url} refused the connection: {code} ({message})",
                    code=code,
                ) from exc
            raise TransportConnectionError(
                f"cannot connect to the gateway at {cfg.url}: {exc}"
            ) from exc
        if not self._connected.is_set():
            raise TransportConnectionError(f"the gateway at {cfg.url} did not accept {NAMESPACE}")
        self._remote_up = True

    def _last_refusal(self) -> tuple[str, str] | None:
        return self._refusal

    def _on_connect(self) -> None:
        self._connected.set()

    def _on_connect_error(self, data: Any = None, *_: Any) -> None:
        code, message = "unauthorized", "refused"
        if isinstance(data, dict):
            detail = data.get("data")
            if isinstance(detail, dict):
                code = str(detail.get("code") or data.get("message") or code)
                message = str(detail.get("message") or message)
            else:
                code = str(data.get("message") or code)
        elif isinstance(data, str):
            code = data
        self._refusal = (code, message)

    def _on_disconnect(self, sio: _SocketIOClient) -> None:
        if sio is not self._sio:
            return
        with self._emit_lock:
            self._connected.clear()
            pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.fail()
        self._dropped.set()

    def _on_error(self, data: Any = None) -> None:
        code = data.get("code") if isinstance(data, dict) else data
        logger.warning("the gateway reports %s; it will close the connection", code)

    def _on_message(self, data: Any) -> None:
        sink = self._sink
        try:
            rel_key, rel_channel, payload = data["key"], data["channel"], data["payload"]
            if isinstance(payload, str):
                payload = payload.encode()
            key = self._patterns.get(rel_key) or self._prefix + rel_key
            channel = self._prefix + rel_channel
        except (TypeError, KeyError) as exc:
            logger.warning("malformed message from the gateway: %r", exc)
            return
        if sink is None:
            return
        try:
            sink.on_message(key, channel, bytes(payload))
        except Exception:
            logger.exception("the message sink failed on a message from %r", channel)

    def _on_link(self, data: Any = None) -> None:
        state = data.get("state") if isinstance(data, dict) else None
        reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
        if state == "down":
            self._remote_up = False
            self._report(LinkState.DISCONNECTED, f"the gateway lost Redis: {reason}", None)
        elif state == "up":
            self._remote_up = True
            if self._connected.is_set():
                self._report(LinkState.RECONNECTED, "the gateway renewed its subscriptions", None)

    def _report(self, state: LinkState, reason: str, error: BaseException | None) -> None:
        with self._report_lock:
            down = state is LinkState.DISCONNECTED
            if down == self._down_reported:
                return
            self._down_reported = down
        sink = self._sink
        if sink is None:
            return
        try:
            sink.on_link(LinkEvent(state=state, reason=reason, error=error))
        except Exception:
            logger.exception("the message sink failed on a link event (%s)", state.value)

    def _run(self) -> None:
        """Wait for the connection to drop; reconnect with backoff; renew; report."""
        cfg = self._config
        while not self._stop_event.is_set():
            self._dropped.wait()
            if self._stop_event.is_set():
                return
            logger.warning("gateway connection lost (%s)", cfg.url)
            self._report(LinkState.DISCONNECTED, "gateway connection lost", None)
            if not cfg.reconnection:
                logger.error("gateway connection lost and reconnection is off")
                return
            attempt = 0
            while not self._stop_event.is_set():
                delay = min(
                    max(_BACKOFF_CAP, cfg.reconnection_delay), cfg.reconnection_delay * 2**attempt
                )
                if self._stop_event.wait(random.uniform(delay / 2, delay)):
                    return
                attempt += 1
                try:
                    self._discard_client()
                    self._connect(cfg.timeout)
                    self._renew(cfg.timeout)
                except GatewayRefusedError as exc:
                    logger.error("renewing subscriptions through the gateway failed: %s", exc)
                except TransportError as exc:
                    logger.info("gateway reconnect attempt %d failed: %s", attempt, exc)
                    if cfg.reconnection_attempts and attempt >= cfg.reconnection_attempts:
                        logger.error(
                            "gave up reconnecting to the gateway after %d attempts", attempt
                        )
                        return
                    continue
                if self._stop_event.is_set():
                    return
                logger.info("gateway connection renewed")
                self._report(LinkState.RECONNECTED, "gateway subscriptions renewed", None)
                break

    def _discard_client(self) -> None:
        sio = self._sio
        if sio is not None:
            try:
                sio.disconnect()
            except Exception:
                logger.debug("discarding the old gateway client failed", exc_info=True)

    def _renew(self, timeout: float) -> None:
        with self._lock:
            channels, patterns = sorted(self._channels), sorted(self._patterns)
        if channels:
            self._call("subscribe", {"names": channels}, timeout, "subscribe")
        if patterns:
            self._call("psubscribe", {"names": patterns}, timeout, "psubscribe")

    def _fail_pending(self) -> None:
        with self._emit_lock:
            pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.fail()

    # -- calls -----------------------------------------------------------------------------

    def _call(
        self, event: str, data: dict[str, Any], timeout: float, what: str, *, publish: bool = False
    ) -> dict[str, Any]:
        """Emit ``event`` once the namespace is connected; wait for its acknowledgement."""
        if self._state == "stopped":
            raise BusStateError(f"cannot {what}: the gateway transport is stopped")
        deadline = time.monotonic() + timeout
        waiter = _Waiter()
        while True:
            left = deadline - time.monotonic()
            if not self._connected.wait(max(0.0, left)):
                raise TransportConnectionError(
                    f"{what}: not connected to the gateway at {self._config.url} within {timeout}s"
                )
            with self._emit_lock:
                sio = self._sio
                if sio is None or not self._connected.is_set():
                    continue
                self._pending[id(waiter)] = waiter
                try:
                    sio.emit(event, data, namespace=NAMESPACE, callback=waiter.ack)
                except socketio.exceptions.BadNamespaceError:  # dropped just now; not sent
                    del self._pending[id(waiter)]
                    self._connected.clear()
                    continue
            break
        finished = waiter.done.wait(max(0.0, deadline - time.monotonic()))
        with self._emit_lock:
            self._pending.pop(id(waiter), None)
        if not finished:
            message = f"{what}: no answer from the gateway within {timeout}s"
            if publish:
                raise PublishTimeoutError(message, timeout=timeout)
            raise TransportError(message)
        if waiter.lost:
            raise TransportConnectionError(
                f"{what}: the gateway connection was lost before it answered"
            )
        result = waiter.result
        if not isinstance(result, dict):
            raise TransportError(f"{what}: unexpected answer from the gateway: {result!r}")
        if not result.get("ok"):
            code = str(result.get("error") or "internal")
            message = f"{what}: the gateway refused ({code}): {result.get('message', '')}"
            if code in _UNAVAILABLE:
                raise TransportConnectionError(message)
            raise GatewayRefusedError(message, code=code)
        return result

    # -- publishing ------------------------------------------------------------------------

    def publish(self, channel: str, payload: bytes, timeout: float) -> int:
        """PUBLISH through the gateway; return the receivers Redis counted.

        Raises:
            GatewayRefusedError: outside the token's scopes (``forbidden``), or too large.
            PublishTimeoutError: no answer within ``timeout``.
            TransportConnectionError: the gateway (or its Redis) cannot be reached.
        """
        result = self._call(
            "publish",
            {"channel": self._rel(channel), "payload": payload},
            timeout,
            f"publish on {channel}",
            publish=True,
        )
        return int(result.get("receivers", 0))

    def publish_many(self, messages: Sequence[tuple[str, bytes]], timeout: float) -> list[int]:
        """Several publishes in order, in one request; receivers per message."""
        if not messages:
            return []
        batch = [[self._rel(channel), payload] for channel, payload in messages]
        result = self._call(
            "publish_many", {"messages": batch}, timeout, "publish a batch", publish=True
        )
        return [int(n) for n in result.get("receivers", [])]

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(self, channels: Sequence[str], timeout: float) -> None:
        """SUBSCRIBE exact channels through the gateway; returns once Redis confirmed."""
        rel = self._names(channels, self._rel)
        if rel:
            self._call("subscribe", {"names": rel}, timeout, f"subscribe {rel!r}")
            with self._lock:
                self._channels.update(rel)

    def unsubscribe(self, channels: Sequence[str], timeout: float) -> None:
        """Drop exact channels."""
        rel = self._names(channels, self._rel)
        if rel:
            with self._lock:
                self._channels.difference_update(rel)
            self._call("unsubscribe", {"names": rel}, timeout, f"unsubscribe {rel!r}")

    def psubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """PSUBSCRIBE glob patterns through the gateway; returns once Redis confirmed."""
        unique = self._names(patterns, str)
        rel = [self._rel_pattern(p) for p in unique]
        if rel:
            with self._lock:  # known before the first message can arrive
                added = [r for r in rel if r not in self._patterns]
                self._patterns.update(zip(rel, unique, strict=True))
            try:
                self._call("psubscribe", {"names": rel}, timeout, f"psubscribe {rel!r}")
            except BaseException:
                with self._lock:
                    for r in added:
                        self._patterns.pop(r, None)
                raise

    def punsubscribe(self, patterns: Sequence[str], timeout: float) -> None:
        """Drop glob patterns."""
        rel = self._names(patterns, self._rel_pattern)
        if rel:
            with self._lock:
                for r in rel:
                    self._patterns.pop(r, None)
            self._call("punsubscribe", {"names": rel}, timeout, f"punsubscribe {rel!r}")

    def _names(self, names: Sequence[str], rel: Callable[[str], str]) -> list[str]:
        if isinstance(names, str):
            raise ValidationError(f"expected a sequence of names, not the string {names!r}")
        return [rel(n) for n in dict.fromkeys(names)]

    def ping(self, timeout: float) -> float:
        """Round-trip the gateway and its Redis; return the latency in seconds."""
        started = time.perf_counter()
        self._call("ping", {}, timeout, "ping")
        return time.perf_counter() - started

    # -- presence and the client registry --------------------------------------------------

    def _keys(self, zset_key: str, hash_key: str) -> dict[str, Any]:
        return {"zset": self._rel(zset_key), "hash": self._rel(hash_key)}

    def presence_set(
        self, zset_key: str, hash_key: str, member: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Add or refresh ``member`` in a room for ``ttl`` seconds (scope ``presence``)."""
        data = {**self._keys(zset_key, hash_key), "member": member, "info": info, "ttl": ttl}
        self._call("presence_set", data, timeout, "presence_set")

    def presence_remove(self, zset_key: str, hash_key: str, member: str, timeout: float) -> None:
        """Remove ``member`` from a room now."""
        data = {**self._keys(zset_key, hash_key), "member": member}
        self._call("presence_remove", data, timeout, "presence_remove")

    def presence_members(self, zset_key: str, hash_key: str, timeout: float) -> list[str]:
        """Live members of a room, sorted."""
        result = self._call(
            "presence_members", self._keys(zset_key, hash_key), timeout, "presence_members"
        )
        return sorted({str(m) for m in result.get("members", [])})

    def client_set(
        self, zset_key: str, hash_key: str, client_id: str, info: bytes, ttl: float, timeout: float
    ) -> None:
        """Register or refresh this bus for ``ttl`` seconds."""
        data = {**self._keys(zset_key, hash_key), "member": client_id, "info": info, "ttl": ttl}
        self._call("client_set", data, timeout, "client_set")

    def client_remove(self, zset_key: str, hash_key: str, client_id: str, timeout: float) -> None:
        """Remove this bus's registration now."""
        data = {**self._keys(zset_key, hash_key), "member": client_id}
        self._call("client_remove", data, timeout, "client_remove")

    def client_list(self, zset_key: str, hash_key: str, timeout: float) -> list[ClientRecord]:
        """Every live registered bus (scope ``presence``)."""
        result = self._call("client_list", self._keys(zset_key, hash_key), timeout, "client_list")
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
