"""A real Redis Sentinel topology for tests: 1 master, 1 replica, 3 sentinels.

Every process is a ``redis-server`` (sentinels run as ``redis-server <conf> --sentinel``,
no ``redis-sentinel`` package needed), each a :class:`~_servers.RedisServer` on a free
port of 127.0.0.1 with a temporary directory of its own, so the leak detection of
``conftest.py`` (:func:`~_servers.live_servers`) sees every one of them::

    with SentinelTopology() as topology:
        old = topology.master_address()  # ("127.0.0.1", 41234), asked from a sentinel
        topology.client(old).set(b"k", b"v")
        killed = topology.kill_master()  # SIGKILL
        new = topology.wait_for_switch(killed)  # the sentinels agree on the replica
        url = topology.url(db=0)  # "redis+sentinel://127.0.0.1:p1,.../mymaster/0"

The sentinels monitor one service with quorum 2 and fast settings
(``down-after-milliseconds`` 1000, ``failover-timeout`` 3000, ``parallel-syncs`` 1):
a SIGKILLed master is replaced about 2 s later, a ``SENTINEL FAILOVER`` about 1 s
later. :meth:`SentinelTopology.start` returns once every sentinel sees the master,
the replica (link up) and both other sentinels, and ``SENTINEL CKQUORUM`` is OK, so a
failover can start at once.

What Sentinel does that a test must expect (measured on Redis 7.0.15 and 6.2.5):

- ``start()`` takes about 2.2 s: sentinels find each other only through the hello
  messages they publish every 2 s on the data nodes.
- After ``SENTINEL FAILOVER`` the old master stays a writable master until a sentinel
  converts it (``+convert-to-slave``), about 10 s after the switch; writes there are
  lost. :meth:`SentinelTopology.wait_for_role` waits for that.
- :meth:`~_servers.RedisServer.restart` brings a node back with its start-time
  configuration. A restarted sentinel forgets what it learned; the others tell it the
  current master within about 2 s. A restarted replica follows the *first* master
  again, even after it was promoted: restart a promoted replica and the sentinels
  name a master that answers ROLE as a replica of a dead address, and stay so.

Credentials, for the TLS/ACL tests: ``password=`` protects the data nodes
(``requirepass``, the replica's ``masterauth``, the sentinels' ``auth-pass``),
``username=`` adds an ACL user on them that the replica and the sentinels log in as,
and ``sentinel_password=`` protects the sentinels themselves (``requirepass`` and
``sentinel-pass``). ``data_args`` and ``sentinel_config`` take anything more (TLS
ports and certificates, for instance).

Everything started is stopped by :meth:`SentinelTopology.stop` (the context's exit),
also when the start failed half-way or a test killed or paused a node; stopping goes
by PID (:meth:`~_servers.RedisServer.stop`), never by process name.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import attrs
import redis

from _servers import HOST, RedisServer, find_redis_server, stop_all

__all__ = [
    "Address",
    "SentinelTopology",
    "SentinelTopologyError",
    "SwitchEvent",
    "SwitchWatcher",
]

#: ``(host, port)`` of a Redis node, as the sentinels name it.
Address = tuple[str, int]

_POLL = 0.02  # seconds between two looks at the sentinels while waiting
_QUERY_TIMEOUT = 0.5  # a sentinel or node that takes longer counts as not answering
_CONFIRM_TIMEOUT = 2.0  # for a sentinel to confirm a SUBSCRIBE


def _quoted(value: str) -> str:
    """``value`` as one argument of a configuration line (Redis reads C-style quotes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


class SentinelTopologyError(RuntimeError):
    """The topology did not reach the state asked for in time; the message says what
    each sentinel saw, and the tail of their logs."""


@attrs.frozen(kw_only=True)
class SwitchEvent:
    """One ``+switch-master`` message, as a sentinel published it.

    Attributes:
        sentinel: the address of the sentinel that published it.
        service: the monitored service's name.
        old: the master's address before the switch.
        new: the master's address after it.
        at: ``time.monotonic()`` when the message was read.
    """

    sentinel: Address
    service: str
    old: Address
    new: Address
    at: float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(reply: Sequence[Any] | dict[Any, Any]) -> dict[str, str]:
    """``{"name": "mymaster", ...}`` from a Sentinel reply: a map under RESP3 (redis-py
    8 speaks it unless told ``protocol=2``), a flat ``[name, value, ...]`` under RESP2."""
    if isinstance(reply, dict):
        return {_text(key): _text(value) for key, value in reply.items()}
    items = [_text(item) for item in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


class SentinelTopology:
    """1 master + 1 replica + 3 sentinels from ``redis-server`` alone, as a context
    manager; see the module's docstring for an example.

    Args:
        service: the name the sentinels monitor the master under.
        quorum: sentinels that must agree that the master is down (3 run).
        down_after_ms: ``sentinel down-after-milliseconds``.
        failover_timeout_ms: ``sentinel failover-timeout``; a sentinel does not retry
            a failover of the same master within twice this.
        password: password of the data nodes (``requirepass``); the replica
            (``masterauth``) and the sentinels (``auth-pass``) use it.
        username: an ACL user on the data nodes, with ``password`` and ``user_rules``,
            that the replica (``masteruser``) and the sentinels (``auth-user``) log in
            as. Needs ``password``; the default user keeps ``requirepass``.
        user_rules: the ACL rules of ``username``.
        sentinel_password: password of the sentinels (``requirepass``); they use it
            with each other (``sentinel-pass``).
        data_args: more command-line arguments for both data nodes.
        sentinel_config: more lines for every sentinel's configuration file.
        binary: the ``redis-server`` to run; default :func:`~_servers.find_redis_server`.
        ready_timeout: seconds :meth:`start` waits for the sentinels to see everything.
    """

    def __init__(
        self,
        service: str = "mymaster",
        *,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        password: str | None = None,
        username: str | None = None,
        user_rules: str = "~* &* +@all",
        sentinel_password: str | None = None,
        data_args: Iterable[str] = (),
        sentinel_config: str = "",
        binary: str | None = None,
        ready_timeout: float = 20.0,
    ) -> None:
        if not service or any(char.isspace() for char in service):
            raise ValueError(f"service must be one non-empty word, got {service!r}")
        if username is not None and password is None:
            raise ValueError("username needs a password")
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.password = password
        self.username = username
        self.sentinel_password = sentinel_password
        self.ready_timeout = ready_timeout
        self.binary = binary if binary is not None else find_redis_server()
        common = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        if password is not None:
            common += ["--requirepass", password, "--masterauth", password]
        if username is not None:
            common += ["--user", username, "on", f">{password}", *user_rules.split()]
            common += ["--masteruser", username]
        common += list(data_args)
        self._extra_sentinel_config = sentinel_config
        #: The data node that is master at the start (a :class:`~_servers.RedisServer`).
        self.master = RedisServer(common, binary=self.binary)
        #: The data node that is its replica at the start (``--replicaof`` is added by
        #: :meth:`start`, once the master's port is final).
        self.replica = RedisServer(common, binary=self.binary)
        #: The three sentinels (``redis-server <conf> --sentinel``); their configuration
        #: is written by :meth:`start`, and rewritten by Sentinel as it learns.
        self.sentinels: tuple[RedisServer, ...] = tuple(
            RedisServer(self._sentinel_args(), binary=self.binary) for _ in range(3)
        )
        self._started = False
        # One short-timeout client per process, for polling; RedisServer.stop closes it.
        self._probes: dict[int, redis.Redis] = {}

    # -- what it is made of --------------------------------------------------------------

    @property
    def data_servers(self) -> tuple[RedisServer, ...]:
        """The master and the replica as they were at the start (roles change on a
        failover: ask :meth:`master_server` for the current master)."""
        return (self.master, self.replica)

    @property
    def servers(self) -> tuple[RedisServer, ...]:
        """Every process of the topology: data nodes, then sentinels."""
        return (*self.data_servers, *self.sentinels)

    @property
    def sentinel_addresses(self) -> list[Address]:
        """``[(host, port), ...]`` of the three sentinels."""
        return [(HOST, sentinel.port) for sentinel in self.sentinels]

    def pids(self) -> list[int]:
        """The process ids of every process that is running now (paused ones too)."""
        return [server.pid for server in self.servers if server.pid is not None]

    def server_at(self, address: Address) -> RedisServer:
        """The data node listening on ``address``.

        Raises:
            KeyError: no data node of this topology listens there.
        """
        for server in self.data_servers:
            if (HOST, server.port) == tuple(address):
                return server
        raise KeyError(f"no data node of this topology listens on {address!r}")

    def url(self, db: int = 0, *, tls: bool = False, credentials: bool = True) -> str:
        """The bus URL for this topology, e.g.
        ``redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/mymaster/0``.

        With ``credentials`` (the default) the data nodes' ``username``/``password``
        go before the hosts and ``sentinel_password`` into the query string.
        ``tls`` gives ``rediss+sentinel://``. Only a string: nothing parses it yet.
        """
        scheme = "rediss+sentinel" if tls else "redis+sentinel"
        userinfo = ""
        if credentials and self.password is not None:
            user = quote(self.username or "", safe="")
            userinfo = f"{user}:{quote(self.password, safe='')}@"
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinel_addresses)
        query = ""
        if credentials and self.sentinel_password is not None:
            query = f"?sentinel_password={quote(self.sentinel_password, safe='')}"
        return f"{scheme}://{userinfo}{hosts}/{quote(self.service, safe='')}/{db}{query}"

    # -- clients ---------------------------------------------------------------------------

    def client(self, node: Address | RedisServer, **options: Any) -> redis.Redis:
        """A ``redis.Redis`` (bytes replies, short timeouts, no retries) for a data node,
        logged in with the topology's credentials; closed by :meth:`stop`."""
        server = node if isinstance(node, RedisServer) else self.server_at(node)
        if self.password is not None:
            options.setdefault("password", self.password)
        if self.username is not None:
            options.setdefault("username", self.username)
        return server.client(**options)

    def sentinel_client(self, sentinel: int | RedisServer = 0, **options: Any) -> redis.Redis:
        """A ``redis.Redis`` for a sentinel (an index into :attr:`sentinels`, or one of
        them), with ``sentinel_password``; closed by :meth:`stop`."""
        server = self.sentinels[sentinel] if isinstance(sentinel, int) else sentinel
        if self.sentinel_password is not None:
            options.setdefault("password", self.sentinel_password)
        return server.client(**options)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SentinelTopology:
        """Start the master, the replica and the sentinels; return ``self`` once every
        sentinel knows the replica and both other sentinels.

        Raises:
            RuntimeError: it was started before.
            SentinelTopologyError: the sentinels did not get there within
                ``ready_timeout`` seconds. Every process is stopped before any raise.
        """
        if self._started:
            raise RuntimeError("a SentinelTopology starts once; build a new one")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process (sentinels first) and remove their directories; safe to
        call again, also after a failed start or a killed node.

        Raises:
            Exception: the first error of a stop, after every process was stopped.
        """
        stop_all((*reversed(self.sentinels), *reversed(self.data_servers)))

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        nodes = ", ".join(repr(server) for server in self.servers)
        return f"<SentinelTopology {self.service!r}: {nodes}>"

    # -- questions ------------------------------------------------------------------------

    def master_address(self, timeout: float = 5.0) -> Address:
        """The master's address, from the first sentinel that answers
        ``SENTINEL GET-MASTER-ADDR-BY-NAME`` (paused or stopped ones are skipped).

        Raises:
            SentinelTopologyError: no sentinel answered within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index in range(len(self.sentinels)):
                address = self._ask_master(index)
                if address is not None:
                    return address
            if time.monotonic() >= deadline:
                raise SentinelTopologyError(
                    f"no sentinel named the master within {timeout}s\n{self.describe()}"
                )
            time.sleep(_POLL)

    def sentinel_views(self) -> list[Address | None]:
        """What each sentinel answers for the master now (None: no answer)."""
        return [self._ask_master(index) for index in range(len(self.sentinels))]

    def master_server(self) -> RedisServer:
        """The data node that the sentinels name as master now."""
        return self.server_at(self.master_address())

    def role(self, node: Address | RedisServer) -> str | None:
        """A data node's ``ROLE`` (``"master"`` or ``"slave"``); None if it does not
        answer within half a second."""
        server = node if isinstance(node, RedisServer) else self.server_at(node)
        if not server.is_running() or server.paused:
            return None
        try:
            reply = self._probe(server).execute_command("ROLE")
        except (redis.RedisError, OSError):
            return None
        return _text(reply[0])

    def describe(self) -> str:
        """Each sentinel's view of the master, replicas and sentinels, and the logs'
        tails: what an error message needs."""
        lines: list[str] = []
        for index, sentinel in enumerate(self.sentinels):
            lines.append(f"sentinel {index} {sentinel!r}: {self._state_text(index)}")
        for server in self.servers:
            lines.append(f"--- log of {server!r}\n{server.log_tail(15)}")
        return "\n".join(lines)

    # -- faults and failovers -----------------------------------------------------------

    def kill_master(self) -> Address:
        """SIGKILL the current master (as the sentinels name it); return its address."""
        address = self.master_address()
        self.server_at(address).kill()
        return address

    def pause_master(self) -> Address:
        """SIGSTOP the current master (a hung server); return its address."""
        address = self.master_address()
        self.server_at(address).pause()
        return address

    def resume(self, address: Address | None = None) -> None:
        """SIGCONT the data node at ``address``, or every paused process if None."""
        servers = self.servers if address is None else (self.server_at(address),)
        for server in servers:
            if server.paused:
                server.resume()

    def failover(self, sentinel: int = 0) -> Address:
        """``SENTINEL FAILOVER`` on one sentinel: promote the replica without a fault;
        return the old master's address (for :meth:`wait_for_switch`).

        Raises:
            redis.ResponseError: the sentinel refused (e.g. ``NOGOODSLAVE``,
                ``INPROG``).
        """
        address = self.master_address()
        self._probe(self.sentinels[sentinel]).execute_command("SENTINEL", "FAILOVER", self.service)
        return address

    def wait_for_switch(
        self, old: Address, timeout: float = 15.0, *, all_sentinels: bool = True
    ) -> Address:
        """Wait until the sentinels name a master other than ``old``; return it.

        With ``all_sentinels`` (the default) every running, unpaused sentinel must name
        the same new master, and that node must answer ``ROLE`` as master: the state a
        client that asks any sentinel can rely on. Without it, the first sentinel that
        names another master is enough (the moment of its ``+switch-master``).

        Raises:
            SentinelTopologyError: not within ``timeout`` seconds.
        """
        old = (old[0], int(old[1]))
        deadline = time.monotonic() + timeout
        while True:
            views = {view for view in self._live_views() if view is not None}
            if not all_sentinels:
                moved = views - {old}
                if moved:
                    return moved.pop()
            elif len(views) == 1 and old not in views:
                (new,) = views
                if self.role(new) == "master":
                    return new
            if time.monotonic() >= deadline:
                raise SentinelTopologyError(
                    f"the sentinels did not move {self.service!r} away from {old} within "
                    f"{timeout}s (views: {self.sentinel_views()})\n{self.describe()}"
                )
            time.sleep(_POLL)

    def wait_for_role(self, node: Address | RedisServer, role: str, timeout: float = 15.0) -> None:
        """Wait until a data node answers ``ROLE`` with ``role`` (``"master"`` or
        ``"slave"``), e.g. an old master that the sentinels demote after a failover.

        Raises:
            SentinelTopologyError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while (current := self.role(node)) != role:
            if time.monotonic() >= deadline:
                raise SentinelTopologyError(
                    f"{node!r} is {current!r}, not {role!r}, after {timeout}s\n{self.describe()}"
                )
            time.sleep(_POLL)

    def watch_switches(self) -> SwitchWatcher:
        """A :class:`SwitchWatcher` on every running sentinel's ``+switch-master``
        channel, each SUBSCRIBE confirmed when this returns; use it as a context
        manager."""
        return SwitchWatcher(self)

    # -- internals ------------------------------------------------------------------------

    def _start(self) -> None:
        self.master.start()
        self.replica.extra_args += ("--replicaof", HOST, str(self.master.port))
        self.replica.start()
        # Before the sentinels: a sentinel learns replicas from the master's INFO, which
        # it asks on connecting and then only every 10 s.
        self._wait("the replica's link to the master", self._replica_linked)
        for sentinel in self.sentinels:
            sentinel.config = self._sentinel_conf()
            sentinel.start()
        self._wait("every sentinel to see the replica and the other sentinels", self._converged)

    def _sentinel_conf(self) -> str:
        name, master_port = self.service, self.master.port
        lines = [
            f"sentinel monitor {name} {HOST} {master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.username is not None:
            lines.append(f"sentinel auth-user {name} {_quoted(self.username)}")
        if self.password is not None:
            lines.append(f"sentinel auth-pass {name} {_quoted(self.password)}")
        if self.sentinel_password is not None:
            lines.append(f"sentinel sentinel-pass {_quoted(self.sentinel_password)}")
        return "\n".join(lines) + "\n" + self._extra_sentinel_config

    def _sentinel_args(self) -> list[str]:
        args = ["--sentinel"]
        if self.sentinel_password is not None:
            # On the command line, where RedisServer looks for it to PING.
            args += ["--requirepass", self.sentinel_password]
        return args

    def _wait(self, what: str, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not condition():
            if time.monotonic() >= deadline:
                raise SentinelTopologyError(
                    f"no {what} within {self.ready_timeout}s\n{self.describe()}"
                )
            time.sleep(_POLL)

    def _replica_linked(self) -> bool:
        try:
            info = self._probe(self.replica).info("replication")
        except (redis.RedisError, OSError):
            return False
        return info.get("master_link_status") == "up"

    def _converged(self) -> bool:
        replica = (HOST, self.replica.port)
        for index in range(len(self.sentinels)):
            try:
                master, replicas, sentinels = self._state(index)
                probe = self._probe(self.sentinels[index])
                probe.execute_command("SENTINEL", "CKQUORUM", self.service)
            except (redis.RedisError, OSError):
                return False
            if master.get("flags") != "master" or master.get("port") != str(self.master.port):
                return False
            linked = [
                r
                for r in replicas
                if (r.get("ip"), int(r.get("port", 0))) == replica
                and r.get("flags") == "slave"
                and r.get("master-link-status") == "ok"
            ]
            if not linked or len(sentinels) != len(self.sentinels) - 1:
                return False
            if any(s.get("flags") != "sentinel" for s in sentinels):
                return False
        return True

    def _state(
        self, index: int
    ) -> tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]:
        probe = self._probe(self.sentinels[index])
        master = _pairs(probe.execute_command("SENTINEL", "MASTER", self.service))
        replicas = probe.execute_command("SENTINEL", "REPLICAS", self.service)
        sentinels = probe.execute_command("SENTINEL", "SENTINELS", self.service)
        return master, [_pairs(r) for r in replicas], [_pairs(s) for s in sentinels]

    def _state_text(self, index: int) -> str:
        if not self.sentinels[index].is_running() or self.sentinels[index].paused:
            return "not running" if not self.sentinels[index].is_running() else "paused"
        try:
            master, replicas, sentinels = self._state(index)
        except (redis.RedisError, OSError) as exc:
            return f"no answer ({exc!r})"
        keys = ("ip", "port", "flags", "num-slaves", "num-other-sentinels", "config-epoch")
        shown = {key: master.get(key) for key in keys}
        others = [(r.get("port"), r.get("flags"), r.get("master-link-status")) for r in replicas]
        peers = [(s.get("port"), s.get("flags")) for s in sentinels]
        return f"master {shown}, replicas {others}, sentinels {peers}"

    def _ask_master(self, index: int) -> Address | None:
        sentinel = self.sentinels[index]
        if not sentinel.is_running() or sentinel.paused:
            return None
        try:
            probe = self._probe(sentinel)
            reply = probe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        except (redis.RedisError, OSError):
            return None
        if not reply:
            return None
        return (_text(reply[0]), int(reply[1]))

    def _live_views(self) -> list[Address | None]:
        return [
            self._ask_master(index)
            for index, sentinel in enumerate(self.sentinels)
            if sentinel.is_running() and not sentinel.paused
        ]

    def _probe(self, server: RedisServer) -> redis.Redis:
        """The polling client of a process (sentinel or data node), made once."""
        probe = self._probes.get(server.port)
        if probe is None:
            timeouts = {"socket_timeout": _QUERY_TIMEOUT, "socket_connect_timeout": _QUERY_TIMEOUT}
            if server in self.sentinels:
                probe = self.sentinel_client(server, **timeouts)
            else:
                probe = self.client(server, **timeouts)
            self._probes[server.port] = probe
        return probe


class SwitchWatcher:
    """Records every ``+switch-master`` that any sentinel of a topology publishes,
    with the time it arrived; one reader thread per sentinel.

    ::

        with topology.watch_switches() as switches:
            old = topology.kill_master()
            event = switches.wait(old, timeout=10)  # the first SwitchEvent
            assert event.old == old
    """

    def __init__(self, topology: SentinelTopology) -> None:
        self._topology = topology
        self._events: list[SwitchEvent] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pubsubs: list[Any] = []
        #: Why a reader stopped early (its sentinel went away), for error messages.
        self.errors: list[BaseException] = []
        try:
            for index, sentinel in enumerate(topology.sentinels):
                if not sentinel.is_running() or sentinel.paused:
                    continue
                client = topology.sentinel_client(index, socket_timeout=None)
                pubsub = client.pubsub()
                self._pubsubs.append(pubsub)
                pubsub.subscribe("+switch-master")
                confirmed = pubsub.get_message(timeout=_CONFIRM_TIMEOUT)
                if confirmed is None or confirmed.get("type") != "subscribe":
                    raise SentinelTopologyError(
                        f"sentinel {sentinel!r} did not confirm SUBSCRIBE +switch-master "
                        f"within {_CONFIRM_TIMEOUT}s: {confirmed!r}"
                    )
                thread = threading.Thread(
                    target=self._read,
                    args=(pubsub, (HOST, sentinel.port)),
                    name=f"switch-watcher-{sentinel.port}",
                    daemon=True,
                )
                self._threads.append(thread)
            for thread in self._threads:
                thread.start()
        except BaseException:
            self.close()
            raise

    @property
    def events(self) -> list[SwitchEvent]:
        """Every switch seen so far, in arrival order (one per sentinel and switch)."""
        with self._cond:
            return list(self._events)

    def wait(self, old: Address | None = None, timeout: float = 15.0) -> SwitchEvent:
        """Wait for the first switch away from ``old`` (any switch if None), as the
        first sentinel to publish it reported; return it.

        Raises:
            SentinelTopologyError: not within ``timeout`` seconds.
        """
        wanted = None if old is None else (old[0], int(old[1]))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events:
                    if wanted is None or event.old == wanted:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SentinelTopologyError(
                        f"no +switch-master away from {wanted} within {timeout}s "
                        f"(seen: {self._events}, reader errors: {self.errors})\n"
                        f"{self._topology.describe()}"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop the reader threads and close their connections; safe to call again."""
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5.0)
        for pubsub in self._pubsubs:
            with contextlib.suppress(Exception):
                pubsub.close()
        self._pubsubs.clear()

    def __enter__(self) -> SwitchWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _read(self, pubsub: Any, sentinel: Address) -> None:
        while not self._stopping.is_set():
            try:
                message = pubsub.get_message(timeout=0.1)
            except (redis.RedisError, OSError, ValueError) as exc:
                # The sentinel went away (or close() raced the read); the others still
                # report. Kept for the error message of wait().
                if not self._stopping.is_set():
                    with self._cond:
                        self.errors.append(exc)
                return
            if message is None or message.get("type") != "message":
                continue
            at = time.monotonic()
            name, old_host, old_port, new_host, new_port = _text(message["data"]).split()
            event = SwitchEvent(
                sentinel=sentinel,
                service=name,
                old=(old_host, int(old_port)),
                new=(new_host, int(new_port)),
                at=at,
            )
            with self._cond:
                self._events.append(event)
                self._cond.notify_all()
