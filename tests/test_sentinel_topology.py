"""The Sentinel test topology (tests/_sentinel.py) is real: sentinels that agree, a
replica that replicates, failovers that happen, and nothing left running after it.

Each check asks the servers themselves (ROLE, SENTINEL MASTER, a ``+switch-master``
subscription, process ids), not the helper's own bookkeeping.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from _sentinel import SentinelTopology, SentinelTopologyError
from _servers import (
    HOST,
    RedisServer,
    RedisServerStartError,
    live_servers,
    require_redis_server,
)

TopologyFactory = Callable[..., SentinelTopology]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _redis_children() -> set[int]:
    """The redis-server processes whose parent is this test process (Linux /proc)."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it exited while we looked
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and comm.startswith("redis-server"):
            found.add(int(stat.parent.name))
    return found


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return value


def _role(topology: SentinelTopology, port: int) -> list[Any]:
    reply: list[Any] = topology.client((HOST, port)).execute_command("ROLE")
    return reply


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_sentinels_agree_and_the_replica_replicates(sentinel_topology: SentinelTopology) -> None:
    """Three sentinels name the started master and see each other and the replica;
    a write on the master is read on the replica."""
    topology = sentinel_topology
    master, replica = topology.master, topology.replica
    ports = [server.port for server in topology.servers]
    assert len(set(ports)) == 5
    assert 6379 not in ports
    assert len(set(topology.pids())) == 5
    assert all(map(_alive, topology.pids()))

    for index in range(3):
        client = topology.sentinel_client(index)
        addr = client.sentinel_get_master_addr_by_name("mymaster")
        assert (_name(addr[0]), int(addr[1])) == (HOST, master.port)
        state = client.sentinel_master("mymaster")
        assert int(state["num-other-sentinels"]) == 2
        assert int(state["num-slaves"]) == 1
    assert topology.master_address() == (HOST, master.port)

    master_role, replica_role = _role(topology, master.port), _role(topology, replica.port)
    assert _name(master_role[0]) == "master"
    assert [int(entry[1]) for entry in master_role[2]] == [replica.port]
    assert _name(replica_role[0]) == "slave"
    assert int(replica_role[2]) == master.port

    value = uuid.uuid4().hex.encode()
    topology.client(master).set(b"probe", value)
    reader = topology.client(replica)
    _wait(lambda: reader.get(b"probe") == value, 5.0, "the write to reach the replica")
    with pytest.raises(redis.ReadOnlyError):
        reader.set(b"probe", b"on the replica")

    hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in topology.sentinels)
    assert topology.url() == f"redis+sentinel://{hosts}/mymaster/0"
    assert topology.url(3, tls=True) == f"rediss+sentinel://{hosts}/mymaster/3"


def test_a_killed_master_is_replaced_after_switch_master(
    sentinel_topology: SentinelTopology,
) -> None:
    """SIGKILL of the master -> a sentinel publishes +switch-master to the replica's
    address within a few seconds, and the replica answers ROLE as master."""
    topology = sentinel_topology
    master, replica = topology.master, topology.replica
    pubsub = topology.sentinel_client(1, socket_timeout=None).pubsub()
    pubsub.subscribe("+switch-master")
    confirmed = pubsub.get_message(timeout=2.0)
    assert confirmed is not None
    assert confirmed["type"] == "subscribe"
    old_pid = master.pid
    assert old_pid is not None

    killed = topology.kill_master()
    started = time.monotonic()
    assert killed == (HOST, master.port)
    assert not _alive(old_pid)

    message = None
    while message is None and time.monotonic() - started < 10.0:
        message = pubsub.get_message(timeout=0.5)
    elapsed = time.monotonic() - started
    pubsub.close()
    assert message is not None, f"no +switch-master within 10s\n{topology.describe()}"
    assert _name(message["channel"]) == "+switch-master"
    assert _name(message["data"]) == f"mymaster {HOST} {master.port} {HOST} {replica.port}"
    assert elapsed < 6.0  # down-after 1 s + election and promotion, ~2.3 s here

    assert _name(_role(topology, replica.port)[0]) == "master"
    assert topology.wait_for_switch(killed, timeout=10.0) == (HOST, replica.port)
    assert topology.master_address() == (HOST, replica.port)
    topology.client(replica).set(b"after", b"failover")


def test_sentinel_failover_switches_without_a_fault(sentinel_topology: SentinelTopology) -> None:
    """failover() (SENTINEL FAILOVER) promotes the replica while the old master runs;
    every sentinel publishes the switch."""
    topology = sentinel_topology
    master, replica = topology.master, topology.replica
    pid = master.pid
    with topology.watch_switches() as switches:
        old = topology.failover()
        event = switches.wait(old, timeout=10.0)
        assert old == (HOST, master.port)
        assert (event.service, event.old, event.new) == ("mymaster", old, (HOST, replica.port))
        assert _name(_role(topology, replica.port)[0]) == "master"
        assert topology.wait_for_switch(old, timeout=10.0) == (HOST, replica.port)
        everyone = set(topology.sentinel_addresses)
        _wait(
            lambda: {e.sentinel for e in switches.events} == everyone,
            5.0,
            "+switch-master from every sentinel",
        )
    assert master.pid == pid
    assert _alive(pid)


def test_a_hung_master_is_replaced_and_resumes(sentinel_topology: SentinelTopology) -> None:
    """pause_master() (SIGSTOP) leaves a master that answers nothing; the sentinels
    promote the replica, and resume() brings the old process back."""
    topology = sentinel_topology
    master, replica = topology.master, topology.replica
    paused = topology.pause_master()
    assert paused == (HOST, master.port)
    assert master.paused
    with pytest.raises(redis.TimeoutError):
        topology.client(master, socket_timeout=0.3).ping()

    assert topology.wait_for_switch(paused, timeout=10.0) == (HOST, replica.port)
    assert _name(_role(topology, replica.port)[0]) == "master"

    topology.resume()
    assert not master.paused
    assert topology.client(master).ping() is True


def test_nothing_outlives_the_topology() -> None:
    """A failing test with a killed master and a paused replica: on the context's exit
    every process is gone and every directory removed."""
    before = _redis_children()

    class Boom(Exception):
        pass

    topology = SentinelTopology(binary=require_redis_server())
    pids: list[int] = []
    directories: list[Path | None] = []

    def failing_test() -> None:
        with topology:
            pids.extend(topology.pids())
            directories.extend(server.directory for server in topology.servers)
            assert len(set(pids)) == 5
            assert set(pids) <= _redis_children()
            topology.kill_master()
            topology.replica.pause()
            raise Boom

    with pytest.raises(Boom):
        failing_test()
    assert not any(map(_alive, pids))
    assert _redis_children() == before
    assert all(directory is not None and not directory.exists() for directory in directories)
    assert not set(topology.servers) & set(live_servers())


@pytest.mark.redis
@pytest.mark.parametrize(
    ("options", "error", "match", "started"),
    [
        ({"sentinel_config": "sentinel no-such-setting yes\n"}, RedisServerStartError, "FATAL", 2),
        ({"ready_timeout": 1.0}, SentinelTopologyError, "every sentinel to see", 5),
    ],
    ids=["a sentinel does not start", "the sentinels do not converge in time"],
)
def test_a_failed_start_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
    started: int,
) -> None:
    """A start that fails after the data nodes run stops every process and says why."""
    before = _redis_children()
    pids: list[int] = []
    start = RedisServer.start

    def recording_start(server: RedisServer) -> RedisServer:
        start(server)
        assert server.pid is not None
        pids.append(server.pid)
        return server

    monkeypatch.setattr(RedisServer, "start", recording_start)
    topology = SentinelTopology(binary=require_redis_server(), **options)
    with pytest.raises(error, match=match):
        topology.start()
    assert len(pids) == started  # processes were running when it failed
    assert not any(map(_alive, pids))
    assert _redis_children() == before
    assert not any(server.is_running() for server in topology.servers)
    assert all(server.directory is None for server in topology.servers)
    assert not set(topology.servers) & set(live_servers())


def test_credentials_reach_every_process(sentinel_topology_factory: TopologyFactory) -> None:
    """password/username/sentinel_password: strangers are refused, the replica and the
    sentinels log in as the ACL user, and a failover still works."""
    topology: SentinelTopology = sentinel_topology_factory(
        "svc-a", password="p@ss w", username="alice", sentinel_password='s/p"w'
    )
    with pytest.raises(redis.AuthenticationError):
        topology.master.client().ping()
    with pytest.raises(redis.AuthenticationError):
        topology.sentinels[0].client().ping()

    clients = topology.client(topology.master).client_list()
    sentinel_links = [c for c in clients if _name(c.get("name", "")).startswith("sentinel-")]
    replica_links = [c for c in clients if "S" in _name(c["flags"])]
    assert len(sentinel_links) == 6  # a command and a pub/sub link per sentinel
    assert {_name(c["user"]) for c in sentinel_links + replica_links} == {"alice"}
    assert len(replica_links) == 1

    old = topology.failover()
    assert topology.wait_for_switch(old, timeout=10.0) == (HOST, topology.replica.port)

    hosts = ",".join(f"{HOST}:{port}" for _, port in topology.sentinel_addresses)
    assert topology.url() == (
        f"redis+sentinel://alice:p%40ss%20w@{hosts}/svc-a/0?sentinel_password=s%2Fp%22w"
    )
