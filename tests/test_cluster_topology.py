"""The Redis Cluster test topology (tests/_cluster.py) and its fixtures.

Each claim is checked against what the servers themselves report (``CLUSTER INFO``,
``CLUSTER SLOTS``, ``CLUSTER KEYSLOT``, ``ROLE``, ``MOVED`` replies, process ids), not
against the helper's own bookkeeping.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.client import PubSub

import _cluster
from _cluster import (
    SLOTS,
    ClusterTimeoutError,
    ClusterTopology,
    ClusterUnsupportedError,
    NodeEntry,
    hash_tag_for_slot,
    require_cluster_redis_server,
)
from _helpers import wait_for
from _servers import DEVELOPER_PORT, HOST, RedisServer, live_servers

Factory = Callable[..., ClusterTopology]


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _nobody_listens_on(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Closed connections leave the port in TIME_WAIT; only a listener blocks this.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _cluster_info(node: RedisServer) -> dict[str, str]:
    text = node.client().execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.split()) if text else {}


def _server_slot(node: RedisServer, key: str | bytes) -> int:
    return int(node.client().execute_command("CLUSTER", "KEYSLOT", key))


def _role(node: RedisServer) -> list[Any]:
    reply: list[Any] = node.client().execute_command("ROLE")
    return reply


def _moved_to(error: redis.ResponseError) -> tuple[int, int]:
    """(slot, port) of a MOVED reply: redis-py 8 raises MovedError("SLOT HOST:PORT"),
    5.0 a plain ResponseError("MOVED SLOT HOST:PORT") from a non-cluster client."""
    found = re.fullmatch(r"(?:MOVED )?(\d+) [\d.]+:(\d+)", str(error))
    assert found is not None, f"not a MOVED reply: {error!r}"
    return int(found.group(1)), int(found.group(2))


def _key_in_slot(slot: int, name: str = "k") -> str:
    return f"{{{hash_tag_for_slot(slot)}}}:{name}"


def _first_slot_of(topology: ClusterTopology, master: RedisServer) -> int:
    return min(slot for slot, owner in topology.slot_map().items() if owner is master)


def _next_message(pubsub: PubSub, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.05)
        if message is not None and message["type"] == kind:
            return message
    raise AssertionError(f"no {kind!r} message within {timeout}s")


@pytest.fixture
def binary() -> str:
    """A redis-server that can run a cluster (skips on Redis < 7.0)."""
    return require_cluster_redis_server()


# -- the shared cluster ------------------------------------------------------------------


def test_every_slot_is_served_and_every_node_says_ok(cluster_topology: ClusterTopology) -> None:
    """3 masters with 1 replica each, all 16384 slots served once, state ok everywhere."""
    nodes = cluster_topology.nodes
    assert len(nodes) == 6
    for node in nodes:
        info = _cluster_info(node)
        assert info["cluster_state"] == "ok", (node, info)
        assert info["cluster_slots_assigned"] == str(SLOTS)
        assert info["cluster_slots_ok"] == str(SLOTS)
        assert info["cluster_known_nodes"] == "6"
        assert info["cluster_size"] == "3"
        # Every node's own CLUSTER SLOTS covers 0..16383 with no gap and no overlap.
        ranges = sorted(
            (int(first), int(last), int(primary[1]), tuple(int(r[1]) for r in replicas))
            for first, last, primary, *replicas in node.client().execute_command("CLUSTER", "SLOTS")
        )
        covered = [slot for first, last, *_ in ranges for slot in range(first, last + 1)]
        assert covered == list(range(SLOTS)), node
        assert len({primary for _, _, primary, _ in ranges}) == 3
        assert all(len(replicas) == 1 for *_, replicas in ranges)

    masters = cluster_topology.masters()
    assert len(masters) == 3
    for master in masters:
        assert _role(master)[0] == b"master"
        (replica,) = cluster_topology.replicas_of(master)
        role = _role(replica)
        assert role[0] == b"slave"
        assert (int(role[2]), role[3]) == (master.port, b"connected")
    assert set(masters).isdisjoint(
        replica for master in masters for replica in cluster_topology.replicas_of(master)
    )


def test_addresses_name_every_node_and_never_6379(cluster_topology: ClusterTopology) -> None:
    """startup_nodes and the redis+cluster:// URL list every node's own port."""
    ports = [node.port for node in cluster_topology.nodes]
    assert cluster_topology.startup_nodes == [(HOST, port) for port in ports]
    assert cluster_topology.url == "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports)
    bus_ports = [cluster_topology.bus_port(node) for node in cluster_topology.nodes]
    assert len(set(ports + bus_ports)) == 12
    assert DEVELOPER_PORT not in ports + bus_ports
    for node, bus in zip(cluster_topology.nodes, bus_ports, strict=True):
        # The bus port each node announces is the one it was given.
        line = node.client().execute_command("CLUSTER", "NODES").decode()
        assert f"{HOST}:{node.port}@{bus}" in line


def test_slot_of_and_node_for_slot_match_the_servers(cluster_topology: ClusterTopology) -> None:
    """slot_of is CLUSTER KEYSLOT; node_for_slot takes a write the others answer MOVED."""
    any_node = cluster_topology.nodes[0]
    keys: list[str | bytes] = ["a", "photo.uploaded", "{user:1}:name", "x{user:1}y", b"\xff\x00"]
    for key in keys:
        slot = cluster_topology.slot_of(key)
        assert slot == _server_slot(any_node, key)
        owner = cluster_topology.node_for_slot(slot)
        assert owner.client().set(key, b"v")
        for other in cluster_topology.masters():
            if other is not owner:
                with pytest.raises(redis.ResponseError) as moved:
                    other.client().set(key, b"v")
                assert _moved_to(moved.value) == (slot, owner.port)
    for slot in [0, 1, 5460, 5461, 12345, SLOTS - 1]:
        key = _key_in_slot(slot)
        assert cluster_topology.slot_of(key) == _server_slot(any_node, key) == slot


def test_a_cluster_client_writes_and_reads_on_every_master(
    cluster_topology: ClusterTopology,
) -> None:
    """RedisCluster routes keys to three different masters and reads them back."""
    client = cluster_topology.client()
    written: dict[str, RedisServer] = {}
    for master in cluster_topology.masters():
        key = _key_in_slot(_first_slot_of(cluster_topology, master))
        assert client.set(key, str(master.port))
        written[key] = master
    assert len(set(written.values())) == 3
    for key, master in written.items():
        assert client.get(key) == str(master.port).encode()
        # The key lives on that master and nowhere else (the fixture emptied them all).
        assert master.client().get(key) == str(master.port).encode()
        assert master.client().dbsize() == 1


def test_a_sharded_publish_reaches_ssubscribe_on_the_owner(
    cluster_topology: ClusterTopology,
) -> None:
    """SPUBLISH (routed by RedisCluster) reaches an SSUBSCRIBE on the slot's master;
    the other masters refuse the channel with MOVED."""
    client = cluster_topology.client()
    for master in cluster_topology.masters():
        channel = _key_in_slot(_first_slot_of(cluster_topology, master), "ev")
        pubsub = master.client().pubsub()
        try:
            pubsub.ssubscribe(channel)
            assert _next_message(pubsub, "ssubscribe")["channel"] == channel.encode()
            assert client.spublish(channel, f"to {master.port}") == 1
            message = _next_message(pubsub, "smessage")
            assert (message["channel"], message["data"]) == (
                channel.encode(),
                f"to {master.port}".encode(),
            )
        finally:
            pubsub.close()
        for other in cluster_topology.masters():
            if other is not master:
                with pytest.raises(redis.ResponseError) as moved:
                    other.client().spublish(channel, b"x")
                assert _moved_to(moved.value)[1] == master.port


# -- clusters of their own ---------------------------------------------------------------


def test_killing_a_master_promotes_its_replica(cluster_topology_factory: Factory) -> None:
    """kill_master_of SIGKILLs the slot's master; wait_for_promotion returns its replica,
    which serves the slot (and its replicated key) within a few seconds."""
    topology = cluster_topology_factory()
    key = "{photo}:42"
    slot = topology.slot_of(key)
    old_master = topology.node_for_slot(slot)
    (replica,) = topology.replicas_of(old_master)
    old_master.client().set(key, b"kept")
    assert old_master.client().execute_command("WAIT", 1, 2000) == 1  # replicated
    assert topology.is_intact()

    started = time.monotonic()
    killed = topology.kill_master_of(slot)
    promoted = topology.wait_for_promotion(slot, timeout=10.0)
    elapsed = time.monotonic() - started

    assert killed is old_master
    assert not old_master.is_running()
    assert promoted is replica
    assert elapsed < 8.0, f"promotion took {elapsed:.1f}s"
    assert _role(promoted)[0] == b"master"
    assert promoted.client().get(key) == b"kept"
    assert all(_cluster_info(n)["cluster_state"] == "ok" for n in topology.nodes if n.is_running())
    masters = topology.masters()
    assert promoted in masters
    assert old_master not in masters
    assert len(masters) == 3
    assert topology.client().get(key) == b"kept"
    assert not topology.is_intact()

    # Restarted, the crashed master comes back as the replica of its successor.
    old_master.restart()
    wait_for(
        lambda: (
            topology.replicas_of(promoted) == [old_master]
            and _role(old_master)[0::3] == [b"slave", b"connected"]
        ),
        timeout=10.0,
        what="the old master to rejoin as a replica",
    )
    topology.wait_until_ok()


def test_migrate_slot_moves_the_slot_and_its_keys(cluster_topology_factory: Factory) -> None:
    """migrate_slot moves every key of the slot; the new owner serves them, the old one
    answers MOVED, and every node names the new owner."""
    topology = cluster_topology_factory()
    slot = 1234
    source = topology.node_for_slot(slot)
    target = next(master for master in topology.masters() if master is not source)
    client = topology.client()  # its slot map predates the move
    tag = hash_tag_for_slot(slot)
    keys = [f"{{{tag}}}:{n}" for n in range(150)]  # two MIGRATE batches
    for key in keys:
        client.set(key, key)
    assert int(source.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 150

    started = time.monotonic()
    topology.migrate_slot(slot, target)
    elapsed = time.monotonic() - started

    assert elapsed < 5.0, f"migration took {elapsed:.1f}s"
    assert topology.node_for_slot(slot) is target
    for node in topology.nodes:
        assert topology.slot_map(node)[slot] is target, node
        assert _cluster_info(node)["cluster_state"] == "ok"
    assert int(target.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 150
    assert int(source.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) == 0
    assert target.client().get(keys[0]) == keys[0].encode()
    with pytest.raises(redis.ResponseError) as moved:
        source.client().get(keys[0])
    assert _moved_to(moved.value) == (slot, target.port)
    assert client.get(keys[-1]) == keys[-1].encode()
    with pytest.raises(ValueError, match="already served"):
        topology.migrate_slot(slot, target)


@pytest.mark.redis
def test_no_process_outlives_the_context(binary: str) -> None:
    """Leaving the with block stops every node by PID, frees its ports and directory,
    and takes it off the leak list; a stopped topology can start again."""
    topology = ClusterTopology(binary=binary)
    with topology:
        nodes = topology.nodes
        pids = [node.pid for node in nodes]
        ports = [port for node in nodes for port in (node.port, topology.bus_port(node))]
        directories = [node.directory for node in nodes]
        assert all(pid is not None and _process_exists(pid) for pid in pids)
        assert set(nodes) <= set(live_servers())
        nodes[1].kill()  # a crashed node is cleaned up too
    assert not any(_process_exists(pid) for pid in pids if pid is not None)
    assert all(_nobody_listens_on(port) for port in ports)
    assert not any(directory is not None and directory.exists() for directory in directories)
    assert set(nodes).isdisjoint(live_servers())
    assert topology.nodes == ()


@pytest.mark.redis
def test_a_failed_start_stops_every_node_it_started(
    binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster not ready in time raises ClusterTimeoutError and leaves no process;
    the same topology then starts (what the shared fixture does to rebuild one)."""
    started: list[int] = []
    spawn = ClusterTopology._spawn_nodes

    def spawn_and_record(self: ClusterTopology, binary: str) -> None:
        spawn(self, binary)
        started.extend(node.pid for node in self.nodes if node.pid is not None)

    monkeypatch.setattr(ClusterTopology, "_spawn_nodes", spawn_and_record)
    topology = ClusterTopology(binary=binary, ready_timeout=0.2)
    with pytest.raises(ClusterTimeoutError, match="timed out waiting for"):
        topology.start()
    assert len(started) == 6
    assert not any(_process_exists(pid) for pid in started)
    assert topology.nodes == ()
    assert not any(server.pid in started for server in live_servers())

    monkeypatch.undo()
    topology.ready_timeout = 30.0
    with topology:
        assert topology.is_intact()
        assert not {node.pid for node in topology.nodes} & set(started)


def test_redis_older_than_7_is_refused_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis 6.2 gets ClusterUnsupportedError from start(), a skip from the fixtures."""
    monkeypatch.setattr(_cluster, "binary_version", lambda binary: (6, 2, 14))
    monkeypatch.setattr(_cluster, "require_redis_server", lambda: "/opt/redis-6.2")
    topology = ClusterTopology(binary="/opt/redis-6.2")
    with pytest.raises(ClusterUnsupportedError, match=r"7\.0\+.*/opt/redis-6.2 is 6\.2\.14"):
        topology.start()
    assert topology.nodes == ()
    with pytest.raises(pytest.skip.Exception, match=r"7\.0\+.*6\.2\.14"):
        require_cluster_redis_server()


# -- pure parts --------------------------------------------------------------------------


def test_cluster_nodes_lines_are_parsed() -> None:
    """A CLUSTER NODES line gives id, port, flags, master and slot ranges (migration
    markers left out)."""
    master = NodeEntry.parse(
        "07c3 127.0.0.1:30004@31004,host myself,master - 0 1426238317239 4 connected "
        "0-5460 5462 [5461->-e7d1]"
    )
    assert master.node_id == "07c3"
    assert master.port == 30004
    assert master.flags == {"myself", "master"}
    assert master.master_id is None
    assert master.slots == ((0, 5460), (5462, 5462))
    assert master.is_master
    assert not master.failed
    replica = NodeEntry.parse("e7d1 127.0.0.1:30002@40002 slave,fail? 07c3 0 0 4 connected")
    assert (replica.master_id, replica.slots, replica.is_master) == ("07c3", (), False)
    assert replica.failed


def test_hash_tags_and_slots_are_checked() -> None:
    """hash_tag_for_slot finds a tag for any slot; slots outside 0..16383 are refused."""
    for slot in [0, 7, SLOTS - 1]:
        assert ClusterTopology().slot_of(f"{{{hash_tag_for_slot(slot)}}}:x") == slot
    with pytest.raises(ValueError, match="slot"):
        hash_tag_for_slot(SLOTS)
    with pytest.raises(TypeError, match="one string"):
        ClusterTopology(extra_args="--port 1")
    with pytest.raises(ValueError, match="master"):
        ClusterTopology(masters=0)
