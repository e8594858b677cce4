"""Configuration values: defaults, validation, ``from_url`` and ``from_env`` (pure)."""

from __future__ import annotations

import pickle
import sys
from typing import Any

import attrs
import pytest

from eventbus import (
    ClientConfig,
    ConfigurationError,
    EventBusConfig,
    PerformanceConfig,
    RedisConfig,
)

# -- defaults ---------------------------------------------------------------------------


def test_redis_config_defaults() -> None:
    """RedisConfig() is localhost:6379/0, prefix eventbus:, plain TCP, documented timeouts."""
    config = RedisConfig()
    assert attrs.asdict(config) == {
        "host": "localhost",
        "port": 6379,
        "username": None,
        "password": None,
        "db": 0,
        "key_prefix": "eventbus:",
        "ssl": False,
        "ssl_ca_certs": None,
        "unix_socket_path": None,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 1.0,
        "probe_timeout": 1.5,
        "max_connections": 50,
    }
    assert config.url == "redis://localhost:6379/0"


def test_client_config_defaults() -> None:
    """ClientConfig needs only a URL; it reconnects forever by default."""
    config = ClientConfig(url="http://localhost:3003")
    assert attrs.asdict(config) == {
        "url": "http://localhost:3003",
        "auth_token": None,
        "reconnection": True,
        "reconnection_delay": 1.0,
        "reconnection_attempts": 0,
        "timeout": 20.0,
    }


def test_performance_config_defaults() -> None:
    """PerformanceConfig() sends each publish at once and retries 3 times from 0.1 s."""
    assert attrs.asdict(PerformanceConfig()) == {
        "batch_size": 1,
        "batch_interval": 0.05,
        "max_buffer": 10_000,
        "max_retries": 3,
        "retry_delay": 0.1,
        "retry_max_delay": 5.0,
    }


def test_event_bus_config_defaults() -> None:
    """EventBusConfig needs only service_name and defaults to the embedded memory:// broker."""
    config = EventBusConfig(service_name="photo-api")
    assert config.url is None
    assert config.redis is None
    assert config.client is None
    assert config.log_level is None
    assert config.performance == PerformanceConfig()
    assert config.publish_timeout == 2.0
    assert config.operation_timeout == 5.0
    assert config.max_event_size == 1_048_576
    assert config.handler_threads == 16
    assert config.queue_size == 10_000
    assert config.overflow == "drop_oldest"
    assert config.block_timeout == 1.0
    assert config.presence_ttl == 15.0
    assert config.heartbeat_interval == 5.0
    assert config.shutdown_timeout == 5.0
    assert config.transport_url == "memory://"
    assert config.key_prefix == "eventbus:"


def test_service_name_is_required() -> None:
    """EventBusConfig() without service_name is a TypeError (a required field)."""
    with pytest.raises(TypeError):
        EventBusConfig()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "cls", [RedisConfig, PerformanceConfig, EventBusConfig, ClientConfig], ids=lambda c: c.__name__
)
def test_configs_are_keyword_only(cls: type) -> None:
    """No config takes positional arguments."""
    with pytest.raises(TypeError):
        cls("positional")


# -- validation -------------------------------------------------------------------------

_BAD_NUMBERS = [0, -1, "1", True, float("nan")]


def _bad_value_cases() -> list[Any]:
    """(class, required kwargs, field, bad value) for every validated field."""
    bus = {"service_name": "svc"}
    client = {"url": "http://gw:3003"}
    cases: list[tuple[type, dict[str, Any], str, Any]] = []
    for field in (
        "publish_timeout",
        "operation_timeout",
        "block_timeout",
        "presence_ttl",
        "shutdown_timeout",
    ):
        cases += [(EventBusConfig, bus, field, bad) for bad in _BAD_NUMBERS]
    for field in ("max_event_size", "handler_threads", "queue_size"):
        cases += [(EventBusConfig, bus, field, bad) for bad in (0, -5, 1.5, True, "10")]
    cases += [
        (EventBusConfig, {}, "service_name", ""),
        (EventBusConfig, {}, "service_name", "has space"),
        (EventBusConfig, {}, "service_name", "x" * 101),
        (EventBusConfig, {}, "service_name", "caf\u00e9"),
        (EventBusConfig, {}, "service_name", None),
        (EventBusConfig, bus, "log_level", "verbose"),
        (EventBusConfig, bus, "log_level", 10),
        (EventBusConfig, bus, "overflow", "drop_all"),
        (EventBusConfig, bus, "overflow", None),
        (EventBusConfig, bus, "url", "no scheme at all"),
        (EventBusConfig, bus, "url", "localhost:6379"),
        (EventBusConfig, bus, "url", "ftp://h"),
        (EventBusConfig, bus, "url", 6379),
        (EventBusConfig, bus, "performance", {"batch_size": 2}),
        (EventBusConfig, bus, "performance", None),
        (EventBusConfig, bus, "redis", {"host": "h"}),
        (EventBusConfig, bus, "client", "http://gw"),
        (EventBusConfig, bus, "heartbeat_interval", 0),
        (EventBusConfig, bus, "heartbeat_interval", 15.0),  # not below presence_ttl
        (EventBusConfig, bus, "heartbeat_interval", 20.0),
        (RedisConfig, {}, "port", 0),
        (RedisConfig, {}, "port", 65536),
        (RedisConfig, {}, "port", -1),
        (RedisConfig, {}, "port", "6379"),
        (RedisConfig, {}, "port", True),
        (RedisConfig, {}, "db", -1),
        (RedisConfig, {}, "db", 1.0),
        (RedisConfig, {}, "db", "0"),
        (RedisConfig, {}, "key_prefix", "has space:"),
        (RedisConfig, {}, "key_prefix", "x" * 65),
        (RedisConfig, {}, "key_prefix", "{tag}:"),
        (RedisConfig, {}, "key_prefix", "glob*:"),
        (RedisConfig, {}, "key_prefix", None),
        (RedisConfig, {}, "host", 127),
        (RedisConfig, {}, "host", None),
        (RedisConfig, {}, "host", ""),
        (RedisConfig, {}, "username", 1),
        (RedisConfig, {}, "password", b"bytes"),
        (RedisConfig, {}, "ssl_ca_certs", 1),
        (RedisConfig, {}, "unix_socket_path", 1),
        (RedisConfig, {}, "socket_timeout", 0),
        (RedisConfig, {}, "socket_timeout", -2.0),
        (RedisConfig, {}, "socket_connect_timeout", 0),
        (RedisConfig, {}, "health_check_interval", -1),
        (RedisConfig, {}, "health_check_interval", "15"),
        (RedisConfig, {}, "max_connections", 0),
        (RedisConfig, {}, "max_connections", 2.5),
        (ClientConfig, {}, "url", "ws://gw:3003"),
        (ClientConfig, {}, "url", "gw:3003"),
        (ClientConfig, {}, "url", None),
        (ClientConfig, client, "auth_token", 123),
        (ClientConfig, client, "reconnection_delay", 0),
        (ClientConfig, client, "reconnection_attempts", -1),
        (ClientConfig, client, "timeout", -1),
    ]
    for field in ("batch_size", "max_buffer"):
        cases += [(PerformanceConfig, {}, field, bad) for bad in (0, -1, 1.5, "2")]
    cases += [(PerformanceConfig, {}, "max_retries", bad) for bad in (-1, 1.5, None)]
    for field in ("batch_interval", "retry_delay", "retry_max_delay"):
        cases += [(PerformanceConfig, {}, field, bad) for bad in (0, -0.5, "0.1")]
    return [
        pytest.param(cls, base, field, bad, id=f"{cls.__name__}.{field}={bad!r}")
        for cls, base, field, bad in cases
    ]


@pytest.mark.parametrize(("cls", "base", "field", "bad"), _bad_value_cases())
def test_invalid_value_raises_configuration_error_naming_the_field(
    cls: type, base: dict[str, Any], field: str, bad: Any
) -> None:
    """Each validated field rejects a bad value with a ConfigurationError (a ValueError)."""
    with pytest.raises(ConfigurationError) as info:
        cls(**base, **{field: bad})
    assert isinstance(info.value, ValueError)
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("field", "good"),
    [
        ("log_level", "DEBUG"),
        ("log_level", "warn"),
        ("overflow", "block"),
        ("overflow", "drop_newest"),
        ("publish_timeout", 1),
        ("heartbeat_interval", 14.9),
    ],
)
def test_valid_edge_values_are_accepted(field: str, good: Any) -> None:
    """Case-insensitive log levels, every overflow policy and int seconds are accepted."""
    config = EventBusConfig(service_name="svc", **{field: good})
    assert getattr(config, field) == good


def test_valid_redis_edge_values_are_accepted() -> None:
    """Port 1 and 65535, an empty key_prefix and a 64-character one are valid."""
    assert RedisConfig(port=1).port == 1
    assert RedisConfig(port=65535).port == 65535
    assert RedisConfig(key_prefix="").key_prefix == ""
    assert RedisConfig(key_prefix="a" * 64).key_prefix == "a" * 64
    assert RedisConfig(health_check_interval=0).health_check_interval == 0


@pytest.mark.parametrize("url", ["redis+sentinel://h:26379/m", "redis+cluster://h:7000"])
def test_planned_transports_are_refused_on_construction(url: str) -> None:
    """A transport that is planned but not built yet is a ConfigurationError saying so."""
    with pytest.raises(ConfigurationError, match="not supported yet"):
        EventBusConfig(service_name="svc", url=url)


@pytest.mark.parametrize("url", ["http://gw:3003", "https://gw"])
def test_gateway_urls_need_a_token(url: str) -> None:
    """http(s):// selects the gateway transport; without a token it is refused before
    any I/O, with one the token lands in ``client`` (and stays out of reprs)."""
    with pytest.raises(ConfigurationError, match="token"):
        EventBusConfig(service_name="svc", url=url)
    config = EventBusConfig.from_url(url, service_name="svc", token="s3cret-tok")
    assert config.url == url
    assert config.redis is None
    assert config.client == ClientConfig(url=url, auth_token="s3cret-tok")
    assert config.transport_url == url
    assert "s3cret-tok" not in repr(config)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ConfigurationError, match="token"):
        EventBusConfig.from_url("redis://h", service_name="svc", token="t")
    env = EventBusConfig.from_env(
        {"EVENTBUS_URL": url, "EVENT_BUS_TOKEN": "t", "SERVICE_NAME": "svc"}
    )
    assert env.client == ClientConfig(url=url, auth_token="t")


def test_a_redis_url_is_parsed_into_redis_and_wins_over_a_given_one() -> None:
    """A Redis URL becomes the `redis` settings (url is then None), replacing a given one."""
    config = EventBusConfig(
        service_name="svc", url="redis://from-url:6380/2", redis=RedisConfig(host="given")
    )
    assert config.url is None
    assert config.redis == RedisConfig(host="from-url", port=6380, db=2)
    assert config.transport_url == "redis://from-url:6380/2"


def test_a_memory_url_wins_over_a_given_redis_config() -> None:
    """url='memory://x' selects the memory broker even when a RedisConfig is also given."""
    config = EventBusConfig(service_name="svc", url="memory://x", redis=RedisConfig())
    assert config.transport_url == "memory://x"
    # The realistic way to get there: moving a Redis config to memory:// for a test.
    moved = attrs.evolve(EventBusConfig.from_url("redis://h", service_name="s"), url="memory://y")
    assert moved.transport_url == "memory://y"


# -- from_url -----------------------------------------------------------------------------


def test_from_url_redis_with_credentials_db_and_options() -> None:
    """redis://user:pass@host:port/db?options fills every RedisConfig field it names."""
    config = EventBusConfig.from_url(
        "redis://alice:p%40ss@redis.internal:6380/2?key_prefix=photos-prod:&socket_timeout=1.5"
        "&socket_connect_timeout=0.5&socket_keepalive=off&health_check_interval=0"
        "&max_connections=7",
        service_name="photo-api",
        publish_timeout=1.0,
    )
    assert config.service_name == "photo-api"
    assert config.publish_timeout == 1.0
    assert config.redis == RedisConfig(
        host="redis.internal",
        port=6380,
        username="alice",
        password="p@ss",
        db=2,
        key_prefix="photos-prod:",
        socket_timeout=1.5,
        socket_connect_timeout=0.5,
        socket_keepalive=False,
        health_check_interval=0.0,
        max_connections=7,
    )
    assert config.key_prefix == "photos-prod:"


def test_from_url_defaults_host_port_and_db() -> None:
    """redis://host gives port 6379, db 0 and the default prefix."""
    config = EventBusConfig.from_url("redis://cache", service_name="svc")
    assert config.redis == RedisConfig(host="cache")


def test_from_url_rediss_enables_tls() -> None:
    """rediss:// turns ssl on; ssl_ca_certs comes from the query."""
    config = EventBusConfig.from_url(
        "rediss://secure:6390/1?ssl_ca_certs=/etc/ca.pem", service_name="svc"
    )
    assert config.redis is not None
    assert config.redis.ssl is True
    assert config.redis.ssl_ca_certs == "/etc/ca.pem"
    assert config.redis.db == 1
    assert config.transport_url == "rediss://secure:6390/1"


def test_from_url_unix_socket() -> None:
    """unix:///path?db=N connects over a Unix socket."""
    config = EventBusConfig.from_url(
        "unix://:secret@/var/run/redis.sock?db=3&prefix=app:", service_name="svc"
    )
    assert config.redis is not None
    assert config.redis.unix_socket_path == "/var/run/redis.sock"
    assert config.redis.db == 3
    assert config.redis.password == "secret"
    assert config.redis.key_prefix == "app:"
    assert config.transport_url == "unix://:***@/var/run/redis.sock?db=3"


def test_from_url_memory_needs_no_redis_config() -> None:
    """memory://name selects the embedded broker; no RedisConfig is made."""
    config = EventBusConfig.from_url("memory://tests", service_name="svc")
    assert config.redis is None
    assert config.transport_url == "memory://tests"
    assert config.key_prefix == "eventbus:"


def test_from_url_unknown_option_names_it_and_lists_the_known_ones() -> None:
    """An unknown query option is a ConfigurationError that names it."""
    with pytest.raises(ConfigurationError, match="'sockettimeout'") as info:
        EventBusConfig.from_url("redis://h?sockettimeout=1", service_name="svc")
    assert "socket_timeout" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:notaport",
        "redis://h:99999",
        "redis://h:0",
        "redis://h/notadb",
        "redis://h?socket_timeout=soon",
        "redis://h?socket_timeout=0",
        "redis://h?socket_keepalive=maybe",
        "redis://h?max_connections=1.5",
        "redis://h?key_prefix=has%20space",
        "unix://",
    ],
)
def test_from_url_bad_values_raise_configuration_error(url: str) -> None:
    """A bad port, db, option value or missing socket path is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        EventBusConfig.from_url(url, service_name="svc")


def test_transport_url_masks_the_password() -> None:
    """transport_url (for logs and health) never shows the password."""
    config = EventBusConfig.from_url("redis://bob:hunter2@h:6379/0", service_name="svc")
    assert "hunter2" not in config.transport_url
    assert config.transport_url == "redis://bob:***@h:6379/0"
    assert "hunter2" not in repr(config.redis)
    assert "hunter2" not in repr(RedisConfig(password="hunter2"))
    assert RedisConfig(password="pw").url == "redis://:***@localhost:6379/0"


def test_config_repr_does_not_show_the_url_password() -> None:
    """repr(EventBusConfig) of a URL with a password does not contain the password."""
    config = EventBusConfig.from_url("redis://bob:hunter2@h:6379/0", service_name="svc")
    assert "hunter2" not in repr(config)


def test_client_token_is_not_in_repr() -> None:
    """ClientConfig's auth token stays out of its repr."""
    assert "tok3n" not in repr(ClientConfig(url="https://gw", auth_token="tok3n"))


# -- from_env -----------------------------------------------------------------------------


def test_from_env_eventbus_url() -> None:
    """EVENTBUS_URL selects the transport; EVENTBUS_KEY_PREFIX overrides its prefix."""
    config = EventBusConfig.from_env(
        {
            "EVENTBUS_URL": "redis://:pw@cache:6380/4",
            "EVENTBUS_KEY_PREFIX": "staging:",
            "SERVICE_NAME": "svc",
        }
    )
    assert config.redis is not None
    assert (config.redis.host, config.redis.port, config.redis.db) == ("cache", 6380, 4)
    assert config.redis.password == "pw"
    assert config.key_prefix == "staging:"
    assert config.transport_url == "redis://:***@cache:6380/4"


def test_from_env_eventbus_url_alone() -> None:
    """EVENTBUS_URL alone gives that transport with its own options."""
    redis_config = EventBusConfig.from_env(
        {"EVENTBUS_URL": "redis://cache/1?key_prefix=app:", "SERVICE_NAME": "svc"}
    )
    assert redis_config.redis == RedisConfig(host="cache", db=1, key_prefix="app:")
    memory_config = EventBusConfig.from_env({"EVENTBUS_URL": "memory://x", "SERVICE_NAME": "svc"})
    assert memory_config.transport_url == "memory://x"


def test_from_env_redis_variables() -> None:
    """REDIS_HOST/PORT/PASSWORD/USERNAME/DB build a RedisConfig."""
    config = EventBusConfig.from_env(
        {
            "REDIS_HOST": "redis.internal",
            "REDIS_PORT": "6390",
            "REDIS_PASSWORD": "s3cret",
            "REDIS_USERNAME": "svc-user",
            "REDIS_DB": "5",
            "SERVICE_NAME": "svc",
        }
    )
    assert config.url is None
    assert config.redis == RedisConfig(
        host="redis.internal", port=6390, password="s3cret", username="svc-user", db=5
    )
    assert config.transport_url == "redis://svc-user:***@redis.internal:6390/5"


def test_from_env_redis_port_alone_means_localhost() -> None:
    """Any REDIS_* variable selects Redis, with host localhost by default."""
    config = EventBusConfig.from_env({"REDIS_PORT": "7000", "SERVICE_NAME": "svc"})
    assert config.redis == RedisConfig(port=7000)


def test_from_env_eventbus_url_wins_over_redis_variables() -> None:
    """With EVENTBUS_URL set, REDIS_* variables are ignored."""
    config = EventBusConfig.from_env(
        {"EVENTBUS_URL": "memory://x", "REDIS_HOST": "ignored", "SERVICE_NAME": "svc"}
    )
    assert config.transport_url == "memory://x"
    assert config.redis is None


def test_from_env_gateway_client() -> None:
    """EVENT_BUS_URL and EVENT_BUS_TOKEN configure the gateway client; alone, the gateway
    is the transport (the Node library's meaning), which then needs the token."""
    config = EventBusConfig.from_env(
        {"EVENT_BUS_URL": "http://gw:3003", "EVENT_BUS_TOKEN": "tok", "SERVICE_NAME": "svc"}
    )
    assert config.client == ClientConfig(url="http://gw:3003", auth_token="tok")
    assert (config.url, config.redis) == ("http://gw:3003", None)  # alone: the transport
    # Beside Redis settings it only configures the client (the Redis bus is the transport).
    beside = EventBusConfig.from_env(
        {"EVENT_BUS_URL": "https://gw", "REDIS_HOST": "r", "SERVICE_NAME": "svc"}
    )
    assert beside.client == ClientConfig(url="https://gw")
    assert beside.redis is not None
    assert beside.redis.host == "r"
    with pytest.raises(ConfigurationError, match="token"):
        EventBusConfig.from_env(
            {"EVENT_BUS_URL": "https://gw", "EVENT_BUS_TOKEN": "", "SERVICE_NAME": "svc"}
        )


def test_from_env_service_name_and_log_level() -> None:
    """SERVICE_NAME and LOG_LEVEL are read as is."""
    config = EventBusConfig.from_env({"SERVICE_NAME": "thumbnailer", "LOG_LEVEL": "DEBUG"})
    assert config.service_name == "thumbnailer"
    assert config.log_level == "DEBUG"


def test_from_env_nothing_set_is_memory_and_named_after_the_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty environment gives memory:// and a service name from sys.argv[0]."""
    monkeypatch.setattr(sys, "argv", ["/srv/app/photo_worker.py", "--flag"])
    config = EventBusConfig.from_env({})
    assert config.transport_url == "memory://"
    assert config.redis is None
    assert config.client is None
    assert config.log_level is None
    assert config.service_name == "photo_worker"


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/usr/bin/celery", "celery"),
        ("", "python"),
        ("/opt/my app/run job.py", "run-job"),
    ],
)
def test_program_name_is_made_a_valid_service_name(
    monkeypatch: pytest.MonkeyPatch, argv0: str, expected: str
) -> None:
    """The derived service name drops .py and replaces invalid characters."""
    monkeypatch.setattr(sys, "argv", [argv0])
    assert EventBusConfig.from_env({}).service_name == expected


def test_program_name_under_python_dash_m_is_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m mypkg` (argv[0] = .../mypkg/__main__.py) names the service mypkg."""
    monkeypatch.setattr(sys, "argv", ["/srv/venv/lib/site-packages/mypkg/__main__.py"])
    assert EventBusConfig.from_env({}).service_name == "mypkg"


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a mapping, from_env reads os.environ."""
    for name in ("EVENTBUS_URL", "REDIS_HOST", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SERVICE_NAME", "from-os-environ")
    monkeypatch.setenv("REDIS_PORT", "6400")
    config = EventBusConfig.from_env()
    assert config.service_name == "from-os-environ"
    assert config.redis is not None
    assert config.redis.port == 6400


def test_from_env_options_override_the_environment() -> None:
    """Keyword options win over environment variables."""
    config = EventBusConfig.from_env(
        {"SERVICE_NAME": "env-name", "LOG_LEVEL": "info"},
        service_name="override",
        log_level="error",
        queue_size=5,
    )
    assert (config.service_name, config.log_level, config.queue_size) == ("override", "error", 5)


@pytest.mark.parametrize(
    ("environ", "field"),
    [
        ({"REDIS_PORT": "sixty"}, "REDIS_PORT"),
        ({"REDIS_PORT": "0"}, "port"),
        ({"REDIS_DB": "one"}, "REDIS_DB"),
        ({"SERVICE_NAME": "bad name"}, "service_name"),
        ({"LOG_LEVEL": "loud"}, "log_level"),
        ({"EVENTBUS_URL": "redis://h:bad"}, "url"),
        ({"EVENTBUS_URL": "redis://h", "EVENTBUS_KEY_PREFIX": "a b"}, "key_prefix"),
        ({"EVENT_BUS_URL": "ftp://gw"}, "client.url"),
    ],
)
def test_from_env_bad_values_raise_configuration_error(environ: dict[str, str], field: str) -> None:
    """A bad environment value is a ConfigurationError naming the variable or field."""
    with pytest.raises(ConfigurationError, match=field.replace(".", r"\.")):
        EventBusConfig.from_env({"SERVICE_NAME": "svc", **environ})


# -- immutability -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "value"),
    [
        (RedisConfig(), "port", 1),
        (ClientConfig(url="http://gw"), "timeout", 1.0),
        (PerformanceConfig(), "batch_size", 2),
        (EventBusConfig(service_name="svc"), "queue_size", 1),
    ],
    ids=["redis", "client", "performance", "bus"],
)
def test_configs_are_frozen(config: Any, field: str, value: Any) -> None:
    """Assigning to a config field raises FrozenInstanceError."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(config, field, value)


def test_evolve_makes_a_changed_copy_and_validates() -> None:
    """attrs.evolve returns a new config, leaves the old one alone, and validates."""
    config = EventBusConfig(service_name="svc")
    faster = attrs.evolve(config, publish_timeout=0.5, performance=PerformanceConfig(batch_size=10))
    assert faster.publish_timeout == 0.5
    assert faster.performance.batch_size == 10
    assert config.publish_timeout == 2.0
    assert attrs.evolve(RedisConfig(), port=7000).port == 7000
    with pytest.raises(ConfigurationError, match="publish_timeout"):
        attrs.evolve(config, publish_timeout=-1)
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        attrs.evolve(config, presence_ttl=1.0)


def test_evolve_of_a_url_config_keeps_the_parsed_redis_settings() -> None:
    """Evolving another field of a redis:// config keeps its host and prefix."""
    config = EventBusConfig.from_url("redis://cache:6380/1?key_prefix=app:", service_name="svc")
    changed = attrs.evolve(config, publish_timeout=0.5)
    assert changed.redis == config.redis
    assert changed.key_prefix == "app:"


def test_evolve_with_a_new_url_uses_the_new_url() -> None:
    """attrs.evolve(config, url=...) connects to the new URL, not the old one."""
    config = EventBusConfig.from_url("redis://old-host:6379/0", service_name="svc")
    moved = attrs.evolve(config, url="redis://new-host:6380/1")
    assert moved.redis is not None
    assert (moved.redis.host, moved.redis.port, moved.redis.db) == ("new-host", 6380, 1)
    assert moved.transport_url == "redis://new-host:6380/1"


# -- from_mapping -------------------------------------------------------------------------


def test_from_mapping_reads_upper_cased_fields_nested_dicts_and_the_key_prefix() -> None:
    """URL, KEY_PREFIX, scalars, and REDIS/PERFORMANCE/CLIENT dicts (either case) reach
    their fields; a string is read as the number its field is."""
    config = EventBusConfig.from_mapping(
        {
            "URL": "redis://:pw@cache.internal:6380/2",
            "SERVICE_NAME": "photo-api",
            "KEY_PREFIX": "photos:",
            "PUBLISH_TIMEOUT": "0.5",
            "HANDLER_THREADS": "4",
            "OVERFLOW": "drop_newest",
            "REDIS": {"SOCKET_TIMEOUT": 1.5, "max_connections": 9},
            "PERFORMANCE": {"batch_size": 10, "MAX_RETRIES": 1},
        }
    )
    assert config.service_name == "photo-api"
    assert config.redis is not None
    assert (config.redis.host, config.redis.port, config.redis.db) == ("cache.internal", 6380, 2)
    assert (config.redis.password, config.redis.key_prefix) == ("pw", "photos:")
    assert (config.redis.socket_timeout, config.redis.max_connections) == (1.5, 9)
    assert (config.publish_timeout, config.handler_threads) == (0.5, 4)
    assert config.overflow == "drop_newest"
    assert (config.performance.batch_size, config.performance.max_retries) == (10, 1)
    gateway = EventBusConfig.from_mapping(
        {"URL": "http://gw:3003", "CLIENT": {"url": "http://gw:3003", "AUTH_TOKEN": "t"}},
        default_service_name="svc",
    )
    assert gateway.client == ClientConfig(url="http://gw:3003", auth_token="t")


def test_from_mapping_defaults_and_what_a_redis_config_or_dict_does() -> None:
    """No keys: memory:// named default_service_name; KEY_PREFIX and a REDIS dict are
    ignored by memory://; a REDIS dict alone selects Redis; a RedisConfig takes the
    prefix; None counts as unset."""
    plain = EventBusConfig.from_mapping({}, default_service_name="svc")
    assert plain == EventBusConfig(service_name="svc")
    memory = EventBusConfig.from_mapping(
        {"URL": "memory://", "KEY_PREFIX": "x:", "REDIS": {}}, default_service_name="svc"
    )
    assert memory == EventBusConfig(service_name="svc", url="memory://")
    alone = EventBusConfig.from_mapping({"REDIS": {"HOST": "r"}}, default_service_name="svc")
    assert alone.transport_url == "redis://r:6379/0"
    given = EventBusConfig.from_mapping(
        {"REDIS": RedisConfig(host="r"), "KEY_PREFIX": "k:", "PUBLISH_TIMEOUT": None},
        default_service_name="svc",
    )
    assert given.redis == RedisConfig(host="r", key_prefix="k:")
    assert given.publish_timeout == EventBusConfig(service_name="svc").publish_timeout


def test_from_mapping_with_a_prefix_reads_only_its_keys_and_skips_ignored_ones() -> None:
    """With prefix="EVENTBUS_", other keys are not looked at, and the keys in `ignore`
    are known but left to the caller."""
    config = EventBusConfig.from_mapping(
        {
            "EVENTBUS_URL": "memory://named",
            "EVENTBUS_HANDLERS": "maybe",
            "SECRET_KEY": "x",
            "DEBUG": True,
        },
        prefix="EVENTBUS_",
        ignore=["HANDLERS"],
        default_service_name="web",
    )
    assert (config.transport_url, config.service_name) == ("memory://named", "web")


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"PUBLISH_TIMOUT": 1}, "unknown key(s) PUBLISH_TIMOUT (did you mean PUBLISH_TIMEOUT?)"),
        ({"url": "memory://"}, "unknown key(s) url"),
        ({"EVENTBUS_URL": "memory://"}, "unknown key(s) EVENTBUS_URL"),
        ({"URL": ""}, "URL: must be a non-empty string"),
        ({"URL": "ftp://host"}, "url: must be one of"),
        ({"PUBLISH_TIMEOUT": "soon"}, "PUBLISH_TIMEOUT: cannot read 'soon' as float"),
        ({"PUBLISH_TIMEOUT": -1}, "publish_timeout: must be a number > 0"),
        ({"URL": "memory://", "REDIS": RedisConfig()}, "URL and REDIS are both set"),
        ({"REDIS": "redis://h"}, "REDIS must be a dict of RedisConfig fields or a RedisConfig"),
        ({"REDIS": {"TIMEOUT": 1}}, "unknown key REDIS['TIMEOUT']"),
        ({"PERFORMANCE": {"batch_size": 0}}, "batch_size: must be an integer > 0"),
        ({"CLIENT": {"AUTH_TOKEN": "t"}}, "CLIENT: "),
        ({"KEY_PREFIX": 7}, "KEY_PREFIX: must be a string"),
        ({"URL": "redis://h/0", "KEY_PREFIX": "bad prefix"}, "key_prefix: must be"),
    ],
)
def test_from_mapping_errors_name_the_key(mapping: dict[str, Any], message: str) -> None:
    """Every mistake is a ConfigurationError whose message names the key."""
    with pytest.raises(ConfigurationError) as info:
        EventBusConfig.from_mapping(mapping, default_service_name="svc")
    assert message in str(info.value)
