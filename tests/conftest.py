"""Fixtures shared by the whole test suite: real Redis servers, and Hypothesis settings.

Redis fixtures (see ``tests/_servers.py`` for :class:`RedisServer`):

``redis_server`` (session)
    One ``redis-server`` for the whole session, on a free loopback port.
``redis_url`` (function)
    That server's URL (``redis://127.0.0.1:PORT/0``), every database emptied
    (``FLUSHALL``) before the test.
``redis_client`` (function)
    A ``redis.Redis`` for that clean server (bytes replies, short timeouts).
``transport_url`` (function, parametrized)
    Once with a fresh ``memory://`` broker, once with the clean test Redis and a key
    prefix of its own: the contract suite runs every test against both transports.
``redis_server_factory`` (function)
    ``redis_server_factory(("--notify-keyspace-events", "KEA"))`` starts one more
    server (keyword arguments go to :class:`RedisServer`); every server it started is
    stopped at teardown, whatever the test did. Use it for tests that kill, pause or
    reconfigure a server: the session server must stay healthy and default.
``sentinel_topology_factory`` (function)
    ``sentinel_topology_factory(password="pw")`` starts a :class:`SentinelTopology`
    (``tests/_sentinel.py``: 1 master, 1 replica, 3 sentinels; keyword arguments go to
    it); every topology it started is stopped at teardown, whatever the test did.
``sentinel_topology`` (function)
    One default topology from that factory (service ``mymaster``), about 2 s to start.

Redis Cluster fixtures (see ``tests/_cluster.py`` for :class:`ClusterTopology`; each
skips, with the reason, when ``redis-server`` is older than 7.0):

``cluster_topology`` (function)
    A 3-master + 3-replica cluster shared by the session, with every key deleted
    before the test, rebuilt first if an earlier test left it changed.
``cluster_topology_factory`` (function)
    ``cluster_topology_factory(masters=3, replicas=1, **kwargs)`` starts a cluster of
    the test's own, stopped at teardown. Use it for tests that kill, pause or
    restart nodes, fail over or migrate slots.

A cluster takes about 2 s to start whatever the machine: a master does not report
``cluster_state:ok`` until 2 s after it started (Redis's ``CLUSTER_WRITABLE_DELAY``).
Hence one shared cluster for tests that only use it (a contract suite cannot pay 2 s
a test) and clusters of their own for tests that break one.

Tests that use any of them are marked ``redis`` automatically, so
``pytest -m "not redis"`` runs the rest on a machine without Redis. Without a
``redis-server`` binary those tests are skipped, with the reason; when ``CI`` is set
they fail instead, since a CI run that skips its Redis tests proves nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings

from _cluster import ClusterTopology, require_cluster_redis_server
from _sentinel import SentinelTopology
from _servers import RedisServer, live_servers, require_redis_server, stop_all

# The machines this runs on change speed 3-5x with their load: no per-example deadline.
settings.register_profile(
    "eventbus",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "eventbus"))

_REDIS_FIXTURES = frozenset(
    {
        "redis_server",
        "redis_url",
        "redis_client",
        "redis_server_factory",
        "sentinel_topology",
        "sentinel_topology_factory",
        "cluster_topology",
        "cluster_topology_factory",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a Redis fixture with ``redis``."""
    for item in items:
        if _REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop any redis-server still running after every fixture's teardown; fail the run."""
    leaked = live_servers()
    if not leaked:
        return
    described = ", ".join(map(repr, leaked))
    for server in leaked:
        server.stop()
    message = (
        f"{len(leaked)} redis-server process(es) outlived every fixture and have now been "
        f"stopped: {described}. A test started a RedisServer without stopping it; use "
        "redis_server_factory or `with RedisServer(...) as server:`."
    )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "leaked redis-server processes", red=True)
        reporter.write_line(message)
    else:  # pragma: no cover - without a terminal, say it on stderr
        print(message)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session, on a free loopback port."""
    server = RedisServer(binary=require_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, with every database emptied before the test."""
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.is_running():
        # A test broke the shared server; bring it back rather than fail every test
        # after it. Tests that break servers should use redis_server_factory.
        redis_server.restart()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A ``redis.Redis`` (bytes replies, short timeouts) for the clean session server."""
    client = redis_server.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra servers: ``redis_server_factory(extra_args=(), **kwargs)``.

    Each call returns a started :class:`RedisServer`; all are stopped at teardown,
    also when the test failed or a start failed half-way.
    """
    binary = require_redis_server()
    servers: list[RedisServer] = []

    def start(extra_args: Iterable[str] = (), **kwargs: Any) -> RedisServer:
        kwargs.setdefault("binary", binary)
        server = RedisServer(extra_args, **kwargs)
        servers.append(server)  # before start(): a failed start is cleaned up too
        return server.start()

    try:
        yield start
    finally:
        stop_all(reversed(servers))


@pytest.fixture
def sentinel_topology_factory() -> Iterator[Callable[..., SentinelTopology]]:
    """Start Sentinel topologies: ``sentinel_topology_factory(service="mymaster", **kwargs)``.

    Each call returns a started :class:`SentinelTopology` (1 master, 1 replica, 3
    sentinels); all are stopped at teardown, also when the test failed, killed or
    paused a node, or a start failed half-way.
    """
    binary = require_redis_server()
    topologies: list[SentinelTopology] = []

    def start(service: str = "mymaster", **kwargs: Any) -> SentinelTopology:
        kwargs.setdefault("binary", binary)
        topology = SentinelTopology(service, **kwargs)
        topologies.append(topology)  # before start(): a failed start is cleaned up too
        return topology.start()

    try:
        yield start
    finally:
        stop_all(reversed(topologies))


@pytest.fixture
def sentinel_topology(
    sentinel_topology_factory: Callable[..., SentinelTopology],
) -> SentinelTopology:
    """A started default :class:`SentinelTopology` (service ``mymaster``, quorum 2,
    down-after 1000 ms), stopped at teardown."""
    return sentinel_topology_factory()


@pytest.fixture(scope="session")
def _cluster_topology_session() -> Iterator[ClusterTopology]:
    """The session's shared cluster, started on first use; use ``cluster_topology``."""
    topology = ClusterTopology(binary=require_cluster_redis_server())
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture
def cluster_topology(_cluster_topology_session: ClusterTopology) -> ClusterTopology:
    """The shared 3-master + 3-replica cluster, as started and with no keys.

    A test that left it changed (a node killed or paused, a failover, a slot moved)
    costs the next one a rebuild; such tests should use ``cluster_topology_factory``.
    """
    topology = _cluster_topology_session
    if not topology.is_intact():
        topology.stop()
        topology.start()
    topology.flushall()
    return topology


@pytest.fixture
def cluster_topology_factory() -> Iterator[Callable[..., ClusterTopology]]:
    """Start clusters of the test's own: ``cluster_topology_factory(masters=3,
    replicas=1, **kwargs)`` (keyword arguments go to :class:`ClusterTopology`).

    Each call returns a started topology; all are stopped at teardown, also when the
    test failed or a start failed half-way.
    """
    binary = require_cluster_redis_server()
    topologies: list[ClusterTopology] = []

    def start(masters: int = 3, replicas: int = 1, **kwargs: Any) -> ClusterTopology:
        kwargs.setdefault("binary", binary)
        topology = ClusterTopology(masters, replicas, **kwargs)
        topologies.append(topology)
        return topology.start()

    try:
        yield start
    finally:
        stop_all(reversed(topologies))


@pytest.fixture(params=["memory", "redis"])
def transport_url(request: pytest.FixtureRequest) -> str:
    """An isolated broker for a contract test, once per transport: a fresh
    ``memory://`` name, or the clean test Redis with a fresh key prefix."""
    tag = uuid.uuid4().hex[:8]
    if request.param == "memory":
        return f"memory://test-{tag}"
    url: str = request.getfixturevalue("redis_url")
    return f"{url}?key_prefix=t{tag}:"
