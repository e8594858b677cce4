"""How the gateway talks to Redis: one factory for its connections, one subscribe loop.

Every connection of a gateway node is built here from its
:class:`~eventbus.RedisConfig`, with the bare handshake of the bus's own Redis
transport (RESP2, no ``CLIENT SETINFO``, no maintenance notifications: see
:mod:`eventbus._transports.redis.compat`) and no retries inside redis-py. A failed
command reaches its caller at once, which counts it and answers or tries again on its
own schedule; a subscribed connection is never reconnected behind the gateway's back,
which would hide the messages lost meanwhile.

- :func:`command_client`: the node's client for commands, one pool;
- :class:`Subscriber`: one ``PubSub`` on a connection of its own, kept subscribed for
  as long as it runs. The relay, the dashboard's tail and the ``/service`` namespace
  each run one: they differ only in what they subscribe and do with a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import PubSub
from redis.asyncio.connection import (
    BlockingConnectionPool,
)

from eventbus._core.backoff import ReconnectPolicy
from eventbus._core.config import RedisConfig
from eventbus._core.stats import Counters
from eventbus._transports.redis.compat import connection_options

__all__ = ["CONFIRM_TIMEOUT", "Message", "Subscriber", "command_client", "text"]

#: How long Redis has to confirm a subscription, seconds.
CONFIRM_TIMEOUT = 10.0
#: The longest a subscriber waits for a message before it looks at its probe, seconds.
_POLL = 1.0
#: A subscriber with nothing to read PINGs its connection this often, seconds.
_PROBE_EVERY = 5.0

#: A message as ``PubSub.get_message`` returns it (``type``, ``channel``, ``data``...).
Message = dict[str, Any]


def text(value: bytes | str) -> str:
    """A channel or pattern name as text (redis-py hands them over as bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pool(config: RedisConfig, *, client_name: str, max_connections: int) -> BlockingConnectionPool:
    """A pool whose callers wait for a free connection (at most ``socket_timeout``)
    instead of failing when a burst needs more than ``max_connections`` at once."""
    options = connection_options(
        config, client_name=client_name, socket_timeout=config.socket_timeout, asyncio=True
    )
    return BlockingConnectionPool(
        max_connections=max_connections, timeout=config.socket_timeout, **options
    )


def command_client(config: RedisConfig, *, client_name: str) -> aioredis.Redis:
    """The node's client for commands (never for subscriptions), ``max_connections``
    connections at most; close it with ``aclose()``."""
    pool = _pool(config, client_name=client_name, max_connections=config.max_connections)
    return aioredis.Redis.from_pool(pool)


def _new_pubsub(config: RedisConfig, *, client_name: str) -> PubSub:
    """A PubSub on a fresh connection of its own (a new one for every attempt, so that
    redis-py never renews old subscriptions by itself)."""
    client = aioredis.Redis.from_pool(_pool(config, client_name=client_name, max_connections=1))
    return client.pubsub(ignore_subscribe_messages=False)


async def _release(pubsub: PubSub) -> None:
    await pubsub.aclose()
    await pubsub.connection_pool.disconnect()


class Subscriber:
    """One Redis subscription of a gateway node, renewed after every loss.

    Run by :meth:`start` until :meth:`stop`, it opens a fresh connection, subscribes
    the channels and patterns ``names()`` returns at that moment, waits until Redis
    confirmed each one (at most 10 s), and hands every message to ``on_message``, in
    order; with nothing to read, it PINGs the connection every 5 s. :attr:`ready` is
    set while the subscription is confirmed, and ``on_up(renewed)`` is called each time
    it is: ``renewed`` is True when an earlier subscription was lost, so the messages
    published in between did not arrive.

    Any failure ends the connection: a lost link, a confirmation or PING that did not
    come back in time, an error of a callback. It is logged, counted as
    ``lost_counter`` (an error that is not Redis's or the network's is also counted as
    ``errors`` and logged with its traceback), ``on_down(error)`` is called, and the
    loop tries again after ``policy.delay(attempt)``: the first attempt at once, then
    growing delays. A subscription that held for ``policy.cap`` seconds starts the
    count of attempts again; one that keeps failing as soon as it is up backs off.

    Example::

        subscriber = Subscriber(
            config,
            name="relay",
            client_name=f"{node_id}:relay",
            counters=counters,
            lost_counter="relay_reconnects",
            policy=ReconnectPolicy(first=0.1, cap=5.0),
            names=lambda: (["app:broadcast"], ["app:room:*"]),
            on_message=deliver,
            log=log,
        )
        subscriber.start()
    """

    def __init__(
        self,
        config: RedisConfig,
        *,
        name: str,
        client_name: str,
        counters: Counters,
        lost_counter: str,
        policy: ReconnectPolicy,
        names: Callable[[], tuple[Iterable[str], Iterable[str]]],
        on_message: Callable[[Message], Awaitable[None]],
        on_confirm: Callable[[str, str], None] | None = None,
        on_up: Callable[[bool], Awaitable[None]] | None = None,
        on_down: Callable[[Exception], Awaitable[None]] | None = None,
        log: logging.Logger,
    ) -> None:
        self._config = config
        self._name = name
        self._client_name = client_name
        self._counters = counters
        self._lost_counter = lost_counter
        self._policy = policy
        self._names = names
        self._on_message = on_message
        self._on_confirm = on_confirm
        self._on_up = on_up
        self._on_down = on_down
        self._log = log
        #: Set while the subscription is confirmed.
        self.ready = asyncio.Event()
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()  # one command at a time on the subscribed connection
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the loop runs (started and not stopped)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (on the running event loop) unless it runs already."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"eventbus-gateway-{self._name}"
            )

    async def stop(self) -> None:
        """Stop the loop and close its connection (later calls do nothing)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def command(self, kind: str, names: Iterable[str]) -> None:
        """Send ``subscribe``, ``unsubscribe``, ``psubscribe`` or ``punsubscribe`` for
        ``names`` on the live connection (nothing while there is none: the next
        renewal subscribes what ``names()`` returns then). A confirmation arrives
        through ``on_confirm``.

        Raises:
            redis.exceptions.RedisError, OSError: the link failed (the loop renews it).
        """
        pubsub = self._pubsub
        if pubsub is not None:
            async with self._lock:
                await getattr(pubsub, kind)(*names)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        up_since: float | None = None
        confirmed_before = False
        while True:
            pubsub = _new_pubsub(self._config, client_name=self._client_name)
            self._pubsub = pubsub
            try:
                await self._subscribe(pubsub)
                renewed, confirmed_before = confirmed_before, True
                up_since = loop.time()
                self.ready.set()
                if renewed:
                    self._log.info("%s: subscription renewed", self._name)
                if self._on_up is not None:
                    await self._on_up(renewed)
                await self._serve(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if up_since is not None and loop.time() - up_since >= self._policy.cap:
                    attempt = 0
                up_since = None
                delay = self._policy.delay(attempt)
                attempt += 1
                self.ready.clear()  # before anyone hears of the loss
                self._report(exc, delay)
                await self._down(exc)
            finally:
                self.ready.clear()
                self._pubsub = None
                try:
                    await asyncio.shield(_release(pubsub))
                except Exception:  # the link is already broken: nothing to close cleanly
                    self._log.debug("%s: closing the connection failed", self._name, exc_info=True)
            await asyncio.sleep(delay)

    async def _subscribe(self, pubsub: PubSub) -> None:
        wanted_channels, wanted_patterns = self._names()
        channels, patterns = sorted(set(wanted_channels)), sorted(set(wanted_patterns))
        expected = {("subscribe", c) for c in channels} | {("psubscribe", p) for p in patterns}
        async with self._lock:
            if channels:
                await pubsub.subscribe(*channels)
            if patterns:
                await pubsub.psubscribe(*patterns)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_TIMEOUT
        while expected:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("Redis did not confirm the subscriptions")
            message = await pubsub.get_message(timeout=min(left, _POLL))
            if message is not None:
                expected.discard(await self._dispatch(message))

    async def _serve(self, pubsub: PubSub) -> NoReturn:
        loop = asyncio.get_running_loop()
        next_probe = loop.time() + _PROBE_EVERY
        while True:
            message = await pubsub.get_message(timeout=_POLL)
            if message is not None:
                await self._dispatch(message)
            elif loop.time() >= next_probe:
                # A PING through the subscribed connection: a dead socket raises here.
                next_probe = loop.time() + _PROBE_EVERY
                async with self._lock:
                    await asyncio.wait_for(pubsub.ping(), CONFIRM_TIMEOUT)

    async def _dispatch(self, message: Message) -> tuple[str, str] | None:
        """Hand ``message`` on; the (kind, name) it confirms, if it is a confirmation."""
        kind = message.get("type")
        if kind in ("message", "pmessage"):
            await self._on_message(message)
        elif kind in ("subscribe", "psubscribe"):
            confirmed = (str(kind), text(message["channel"]))
            if self._on_confirm is not None:
                self._on_confirm(*confirmed)
            return confirmed
        return None

    def _report(self, error: Exception, delay: float) -> None:
        self._counters.add(self._lost_counter)
        if isinstance(error, redis.exceptions.RedisError | OSError | TimeoutError):
            self._log.warning(
                "%s lost its Redis subscription (%s); renewing it in %.2fs",
                self._name,
                str(error) or type(error).__name__,
                delay,
            )
        else:
            self._counters.add("errors")
            self._log.error(
                "%s failed; renewing its subscription in %.2fs", self._name, delay, exc_info=error
            )

    async def _down(self, error: Exception) -> None:
        if self._on_down is None:
            return
        try:
            await self._on_down(error)
        except Exception:
            self._counters.add("errors")
            self._log.exception("%s: reporting the lost subscription failed", self._name)
