"""The connection of the ``http(s)://`` transport: one reconnecting Socket.IO client.

:class:`GatewayLink` connects python-socketio's synchronous client to the gateway's
``/service`` namespace with a service token, turns a call into one Socket.IO event
with an acknowledgement (:meth:`GatewayLink.call`), and keeps the connection alive:

* python-socketio's read thread delivers messages (in order: this module makes the
  Engine.IO client hand every packet over on its read thread, instead of one new
  thread per packet) and acknowledgements;
* the ``eventbus-gateway-link`` thread waits for the connection to drop, reconnects
  with the delays of :class:`~eventbus._core.backoff.ReconnectPolicy` (first
  ``reconnection_delay``, then doubling up to at least 10 s), has the transport renew
  every subscription, and reports ``DISCONNECTED``/``RECONNECTED`` to the sink, as it
  does when the gateway reports that its own Redis subscription dropped or came back.

A call made while the link is down waits for it, up to its own timeout; nothing is
emitted on a namespace that is not connected (no ``BadNamespaceError``). The protocol
is in docs/gateway-services.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import engineio
import socketio
import websocket

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.config import ClientConfig
from eventbus._errors import (
    BusStateError,
    GatewayAuthError,
    GatewayRefusedError,
    PublishTimeoutError,
    TransportConnectionError,
    TransportError,
)
from eventbus._transports.base import LinkEvent, LinkState, MessageSink, TransportState

__all__ = ["NAMESPACE", "GatewayLink"]

logger = logging.getLogger("eventbus.transport")

NAMESPACE: Final = "/service"
#: The longest delay between reconnection attempts, unless ``reconnection_delay`` is longer.
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


class GatewayLink:
    """One connection to the gateway's ``/service`` namespace, renewed when it drops.

    Example::

        link = GatewayLink(config, deliver=deliver, renew=resubscribe)
        link.open(sink)
        result = link.call("ping", {}, timeout=2.0, what="ping")
        link.close(timeout=5.0)

    Args:
        config: the gateway URL, token and reconnection settings.
        deliver: passes each ``message`` event's data on to the sink given to
            :meth:`open` (on the read thread).
        renew: called with a timeout after each reconnection, to subscribe again; a
            :class:`~eventbus.TransportError` it raises makes the attempt fail.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        deliver: Callable[[MessageSink, Any], None],
        renew: Callable[[float], None],
    ) -> None:
        self._config = config
        self._deliver = deliver
        self._renew = renew
        self._policy = ReconnectPolicy(
            first=config.reconnection_delay,
            cap=max(_BACKOFF_CAP, config.reconnection_delay),
        )
        #: Where the link is in its life (the transport's state: it opens once).
        self.state = TransportState.NEW
        self._lock = threading.Lock()  # open and close
        self._report_lock = threading.Lock()
        self._emit_lock = threading.Lock()  # emits and the pending table
        self._sio: _SocketIOClient | None = None
        self._connected = threading.Event()  # the namespace is connected now
        self._dropped = threading.Event()  # the current connection ended
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: MessageSink | None = None
        self._pending: dict[int, _Waiter] = {}
        self._refusal: tuple[str, str] | None = None
        self._remote_up = True  # the gateway's own Redis subscription
        self._down_reported = False

    # -- lifecycle -------------------------------------------------------------------------

    def open(self, sink: MessageSink) -> None:
        """Connect to the gateway and start the link thread; link events go to ``sink``.

        Raises:
            GatewayAuthError: the gateway refused the token (``code`` says why).
            TransportConnectionError: the gateway cannot be reached.
            BusStateError: the link was opened before.
        """
        with self._lock:
            if self.state is not TransportState.NEW:
                raise BusStateError(f"the gateway transport cannot start: it is {self.state.value}")
            self._sink = sink
            self._connect(self._config.timeout)
            self.state = TransportState.STARTED
            self._thread = threading.Thread(
                target=self._run, name="eventbus-gateway-link", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float) -> None:
        """Disconnect and stop the link thread (joined within ``timeout``). Idempotent."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self.state is TransportState.STOPPED:
                return
            self.state = TransportState.STOPPED
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

    def alive(self) -> bool:
        """Whether the link thread is running (it ends when reconnection gives up)."""
        return self._thread is not None and self._thread.is_alive()

    def up(self) -> bool:
        """Whether the gateway is connected and its own Redis subscription works."""
        return self._connected.is_set() and self._remote_up and self.alive()

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

    def _on_message(self, data: Any) -> None:
        sink = self._sink
        if sink is not None:
            self._deliver(sink, data)

    def _on_error(self, data: Any = None) -> None:
        code = data.get("code") if isinstance(data, dict) else data
        logger.warning("the gateway reports %s; it will close the connection", code)

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
            # Attempt 1 waits reconnection_delay (jittered), each next one twice as long.
            while self._policy.wait(attempt + 1, self._stop_event):
                attempt += 1
                try:
                    self._discard_client()
                    self._connect(cfg.timeout)
                    self._renew(cfg.timeout)
                except GatewayRefusedError as exc:
                    logger.error("renewing subscriptions through the gateway failed: %s", exc)
                except Exception as exc:
                    if isinstance(exc, TransportError):
                        logger.info("gateway reconnect attempt %d failed: %s", attempt, exc)
                    else:  # a bug, not an outage: loudly, and keep trying
                        logger.exception("gateway reconnect attempt %d failed", attempt)
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

    def _fail_pending(self) -> None:
        with self._emit_lock:
            pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.fail()

    # -- calls -----------------------------------------------------------------------------

    def call(
        self, event: str, data: dict[str, Any], timeout: float, what: str, *, publish: bool = False
    ) -> dict[str, Any]:
        """Emit ``event`` once the namespace is connected; wait for its acknowledgement.

        Returns:
            The acknowledgement's data (``{"ok": true, ...}``).

        Raises:
            GatewayRefusedError: the gateway refused (``code`` says why).
            PublishTimeoutError: with ``publish``, no answer within ``timeout``.
            TransportError: no answer within ``timeout``, or an unexpected answer.
            TransportConnectionError: not connected within ``timeout``, the connection
                dropped before the answer, or the gateway cannot reach Redis now.
            BusStateError: the link is closed.
        """
        if self.state is TransportState.STOPPED:
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
