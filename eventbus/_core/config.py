"""Configuration values: frozen, keyword-only, validated on construction.

Times are in seconds (floats), sizes in bytes. Build a config directly, from a URL
(:meth:`EventBusConfig.from_url`), from the environment (:meth:`EventBusConfig.from_env`)
or from a settings mapping (:meth:`EventBusConfig.from_mapping`);
change one with :func:`attrs.evolve`. Invalid values raise
:class:`~eventbus.ConfigurationError` (a :class:`ValueError`) naming the field.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs

from eventbus._core.settings import build_nested, check_keys, nested_fields, read_scalar
from eventbus._errors import ConfigurationError

__all__ = [
    "ClientConfig",
    "EventBusConfig",
    "OverflowPolicy",
    "PerformanceConfig",
    "RedisConfig",
    "redis_config_from_url",
]

OverflowPolicy = Literal["drop_oldest", "drop_newest", "block"]
_OVERFLOW_POLICIES = ("drop_oldest", "drop_newest", "block")
_LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:/-]{0,64}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_PLANNED_SCHEMES = ("redis+sentinel", "redis+cluster")
_GATEWAY_SCHEMES = ("http", "https")
_SUPPORTED_URLS = "memory://, redis://, rediss://, unix://, http://, https://"

T = TypeVar("T")


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigurationError(f"{field}: {message}")


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
            attribute.name,
            f"must be a number > 0, got {value!r}",
        )


def _non_negative_int(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        attribute.name,
        f"must be an integer >= 0, got {value!r}",
    )


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        attribute.name,
        f"must be an integer > 0, got {value!r}",
    )


def _optional_str(_inst: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    _check(
        value is None or isinstance(value, str), attribute.name, f"must be a string, got {value!r}"
    )


@attrs.frozen(kw_only=True)
class RedisConfig:
    """How to reach Redis, and the prefix of every key and channel.

    Example::

        RedisConfig(
            host="redis.internal", port=6380, password="s3cret", db=2, key_prefix="photos-prod:"
        )

    Attributes:
        host, port, username, password, db: the server and credentials.
        key_prefix: prepended to every key and channel (``eventbus:``), so several
            applications share one Redis; letters, digits and ``_ . : / -``.
        ssl: use TLS (``rediss://``); ``ssl_ca_certs`` a CA bundle path.
        unix_socket_path: connect over a Unix socket instead of TCP.
        socket_timeout: read/write timeout of the listener's connection (its
            subscribe confirmations); other commands run under the deadline of
            their call (``publish_timeout``, ``operation_timeout``).
        socket_connect_timeout: how long a connect may take.
        socket_keepalive: enable TCP keepalive on every socket.
        health_check_interval: how often the listener's watchdog probes its link,
            seconds (0 = off): a PING through the subscribed connection, and a
            heartbeat published on the bus's control channel that must come back
            through the subscription. Either missing for ``probe_timeout`` seconds
            while nothing else arrives counts as a lost link: the listener
            reconnects, resubscribes, and the bus reports a gap.
        probe_timeout: see ``health_check_interval``.
        max_connections: size of each command connection pool (there is one per
            distinct deadline, at most 8).
    """

    host: str = attrs.field(default="localhost")
    port: int = attrs.field(default=6379)
    username: str | None = attrs.field(default=None, validator=_optional_str)
    password: str | None = attrs.field(default=None, validator=_optional_str, repr=False)
    db: int = attrs.field(default=0, validator=_non_negative_int)
    key_prefix: str = attrs.field(default="eventbus:")
    ssl: bool = False
    ssl_ca_certs: str | None = attrs.field(default=None, validator=_optional_str)
    unix_socket_path: str | None = attrs.field(default=None, validator=_optional_str)
    socket_timeout: float = attrs.field(default=5.0, validator=_positive)
    socket_connect_timeout: float = attrs.field(default=2.0, validator=_positive)
    socket_keepalive: bool = True
    health_check_interval: float = attrs.field(default=1.0)
    probe_timeout: float = attrs.field(default=1.5, validator=_positive)
    max_connections: int = attrs.field(default=50, validator=_positive_int)

    @port.validator
    def _check_port(self, _attribute: attrs.Attribute[int], value: int) -> None:
        _check(
            isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536,
            "port",
            f"must be 1-65535, got {value!r}",
        )

    @host.validator
    def _check_host(self, _attribute: attrs.Attribute[str], value: str) -> None:
        _check(
            isinstance(value, str) and value != "",
            "host",
            f"must be a non-empty string, got {value!r}",
        )

    @key_prefix.validator
    def _check_prefix(self, _attribute: attrs.Attribute[str], value: str) -> None:
        _check(
            isinstance(value, str) and _KEY_PREFIX.fullmatch(value) is not None,
            "key_prefix",
            f"must be at most 64 of A-Z a-z 0-9 _ . : / -, got {value!r}",
        )

    @health_check_interval.validator
    def _check_hci(self, _attribute: attrs.Attribute[float], value: float) -> None:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool) and value >= 0,
            "health_check_interval",
            f"must be a number >= 0, got {value!r}",
        )

    @property
    def url(self) -> str:
        """This config as a URL, password masked (for logs and ``health_check``)."""
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}{':***' if self.password else ''}@"
        if self.unix_socket_path:
            return f"unix://{auth}{self.unix_socket_path}?db={self.db}"
        scheme = "rediss" if self.ssl else "redis"
        return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"


def _instance_of(
    cls: type[Any], *, optional: bool = True
) -> Callable[[object, attrs.Attribute[Any], object], None]:
    """A validator: ``value`` is a ``cls`` (or None when ``optional``)."""

    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        _check(
            isinstance(value, cls) or (optional and value is None),
            attribute.name,
            f"must be a {cls.__name__}{' or None' if optional else ''}, got {value!r}",
        )

    return check


def _convert(kind: Callable[[str], T], name: str, raw: str) -> T:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: cannot read {raw!r} as {kind.__name__}") from None


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_URL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "key_prefix": str,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "socket_keepalive": _bool,
    "health_check_interval": float,
    "probe_timeout": float,
    "max_connections": int,
    "ssl_ca_certs": str,
    "db": int,
}


def redis_config_from_url(url: str) -> RedisConfig:
    """Parse a ``redis://``, ``rediss://`` or ``unix://`` URL into a :class:`RedisConfig`.

    ``redis://[[user]:password@]host[:port][/db][?key_prefix=app:&socket_timeout=2]``;
    ``unix://[[user]:password@]/path/to/redis.sock[?db=0]``. Query parameters set the
    fields of the same name.

    Raises:
        ConfigurationError: the URL or one of its values is invalid.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"url: must be a string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in _REDIS_SCHEMES:
        raise ConfigurationError(
            f"url: scheme must be one of {', '.join(_REDIS_SCHEMES)}, got {url!r}"
        )
    fields: dict[str, Any] = {}
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"url: invalid port in {url!r}") from None
    if parts.username:
        fields["username"] = unquote(parts.username)
    if parts.password:
        fields["password"] = unquote(parts.password)
    if parts.scheme == "unix":
        _check(bool(parts.path), "url", f"unix:// needs a socket path, got {url!r}")
        fields["unix_socket_path"] = unquote(parts.path)
    else:
        fields["host"] = parts.hostname or "localhost"
        if port is not None:
            fields["port"] = port
        db_path = parts.path.lstrip("/")
        if db_path:
            fields["db"] = _convert(int, "url db", db_path)
        fields["ssl"] = parts.scheme == "rediss"
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        key = "key_prefix" if name == "prefix" else name
        kind = _URL_OPTIONS.get(key)
        if kind is None:
            known = ", ".join(sorted(_URL_OPTIONS))
            raise ConfigurationError(f"url: unknown option {name!r} (known: {known})")
        fields[key] = _convert(kind, f"url {name}", raw)
    return RedisConfig(**fields)


@attrs.frozen(kw_only=True)
class ClientConfig:
    """How to reach the Socket.IO gateway (the ``http(s)://`` transport).

    Attributes:
        url: the gateway, e.g. ``http://localhost:3003``.
        auth_token: the service token sent in the Socket.IO ``auth`` payload.
        reconnection: reconnect after a lost connection.
        reconnection_delay: first delay between reconnection attempts, seconds.
        reconnection_attempts: give up after this many (0 = never give up).
        timeout: connect timeout, seconds.
    """

    url: str = attrs.field()
    auth_token: str | None = attrs.field(default=None, validator=_optional_str, repr=False)
    reconnection: bool = True
    reconnection_delay: float = attrs.field(default=1.0, validator=_positive)
    reconnection_attempts: int = attrs.field(default=0, validator=_non_negative_int)
    timeout: float = attrs.field(default=20.0, validator=_positive)

    @url.validator
    def _check_url(self, _attribute: attrs.Attribute[str], value: str) -> None:
        _check(
            isinstance(value, str) and urlsplit(value).scheme in ("http", "https"),
            "client.url",
            f"must be an http:// or https:// URL, got {value!r}",
        )


@attrs.frozen(kw_only=True)
class PerformanceConfig:
    """Batching of publishes and the default retry policy of handlers.

    Attributes:
        batch_size: publishes per pipelined batch; 1 (the default) sends each
            publish at once, larger values queue publishes for a background flusher.
        batch_interval: the longest a queued publish waits before its batch is sent,
            in seconds.
        max_buffer: how many publishes may wait in the batch queue; a publish
            beyond it raises :class:`~eventbus.PublishBufferFullError`.
        max_retries: default extra attempts for a failing handler
            (``subscribe(..., retry_on_error=True)``).
        retry_delay: first backoff delay between handler attempts, seconds; it
            doubles per attempt, with jitter, up to ``retry_max_delay``.
        retry_max_delay: the longest backoff delay, seconds.
    """

    batch_size: int = attrs.field(default=1, validator=_positive_int)
    batch_interval: float = attrs.field(default=0.05, validator=_positive)
    max_buffer: int = attrs.field(default=10_000, validator=_positive_int)
    max_retries: int = attrs.field(default=3, validator=_non_negative_int)
    retry_delay: float = attrs.field(default=0.1, validator=_positive)
    retry_max_delay: float = attrs.field(default=5.0, validator=_positive)


@attrs.frozen(kw_only=True)
class EventBusConfig:
    """Everything an :class:`~eventbus.EventBus` needs; only ``service_name`` is required.

    The transport comes from ``url`` when given (``memory://``, ``redis://``,
    ``rediss://``, ``unix://``), else from ``redis`` when given, else it is the
    embedded ``memory://`` broker. A Redis URL is parsed into ``redis`` on
    construction (replacing one given beside it) and ``url`` is then None.

    Example::

        EventBusConfig(service_name="photo-api", redis=RedisConfig(host="localhost", port=6379))

    Attributes:
        service_name: names this service in events (``source``) and client ids.
        url: the transport URL (takes precedence over ``redis``).
        redis: Redis connection settings.
        client: gateway connection settings (``EVENT_BUS_URL``).
        log_level: if set, the level of the ``eventbus`` logger; None leaves
            logging configuration to the application.
        performance: batching and retry defaults.
        publish_timeout: the deadline of one publish, seconds.
        operation_timeout: the deadline of other calls to the server (subscribe,
            rooms, health), seconds.
        max_event_size: the largest encoded event accepted, bytes.
        handler_threads: threads of the handler pool.
        queue_size: events waiting per subscription before ``overflow`` applies.
        overflow: what a full subscription queue does with a new event:
            ``drop_oldest`` (default), ``drop_newest``, or ``block`` the listener
            for up to ``block_timeout`` seconds and then drop the new event.
        block_timeout: see ``overflow``.
        presence_ttl: how long a room membership or client registration lives
            without a heartbeat, seconds.
        heartbeat_interval: how often memberships and the client registration are
            refreshed, seconds; must be below ``presence_ttl``.
        shutdown_timeout: what ``with bus:`` and ``disconnect()`` give in-flight
            handlers to finish, seconds.
    """

    service_name: str = attrs.field()
    url: str | None = attrs.field(default=None, validator=_optional_str)
    redis: RedisConfig | None = attrs.field(default=None, validator=_instance_of(RedisConfig))
    client: ClientConfig | None = attrs.field(default=None, validator=_instance_of(ClientConfig))
    log_level: str | None = attrs.field(default=None)
    performance: PerformanceConfig = attrs.field(
        factory=PerformanceConfig, validator=_instance_of(PerformanceConfig, optional=False)
    )
    publish_timeout: float = attrs.field(default=2.0, validator=_positive)
    operation_timeout: float = attrs.field(default=5.0, validator=_positive)
    max_event_size: int = attrs.field(default=1_048_576, validator=_positive_int)
    handler_threads: int = attrs.field(default=16, validator=_positive_int)
    queue_size: int = attrs.field(default=10_000, validator=_positive_int)
    overflow: OverflowPolicy = attrs.field(default="drop_oldest")
    block_timeout: float = attrs.field(default=1.0, validator=_positive)
    presence_ttl: float = attrs.field(default=15.0, validator=_positive)
    heartbeat_interval: float = attrs.field(default=5.0, validator=_positive)
    shutdown_timeout: float = attrs.field(default=5.0, validator=_positive)

    @service_name.validator
    def _check_service_name(self, _attribute: attrs.Attribute[str], value: str) -> None:
        _check(
            isinstance(value, str) and _SERVICE_NAME.fullmatch(value) is not None,
            "service_name",
            f"must be 1-100 of A-Z a-z 0-9 _ . -, got {value!r}",
        )

    @log_level.validator
    def _check_log_level(self, _attribute: attrs.Attribute[str], value: str | None) -> None:
        _check(
            value is None or (isinstance(value, str) and value.lower() in _LOG_LEVELS),
            "log_level",
            f"must be one of {', '.join(_LOG_LEVELS)}, got {value!r}",
        )

    @overflow.validator
    def _check_overflow(self, _attribute: attrs.Attribute[str], value: str) -> None:
        _check(
            value in _OVERFLOW_POLICIES,
            "overflow",
            f"must be one of {', '.join(_OVERFLOW_POLICIES)}, got {value!r}",
        )

    def __attrs_post_init__(self) -> None:
        _check(
            self.heartbeat_interval < self.presence_ttl,
            "heartbeat_interval",
            f"must be below presence_ttl ({self.presence_ttl}), got {self.heartbeat_interval}",
        )
        if self.url is not None:
            scheme = urlsplit(self.url).scheme.lower()
            if scheme in _REDIS_SCHEMES:
                # A Redis URL is parsed into `redis` (it wins over one given beside it),
                # so that key_prefix and every connection setting have one home.
                object.__setattr__(self, "redis", redis_config_from_url(self.url))
                object.__setattr__(self, "url", None)
            elif scheme in _GATEWAY_SCHEMES:
                # The gateway (eventbus.gateway): `client` carries the token.
                client = self.client
                _check(
                    client is not None and client.auth_token is not None,
                    "url",
                    f"the {scheme}:// gateway transport needs a service token "
                    "(token=... or EVENT_BUS_TOKEN)",
                )
                assert client is not None
                if client.url != self.url:
                    client = attrs.evolve(client, url=str(self.url))
                object.__setattr__(self, "client", client)
                object.__setattr__(self, "redis", None)
            elif scheme in _PLANNED_SCHEMES:
                raise ConfigurationError(
                    f"url: the {scheme}:// transport is not supported yet "
                    f"(supported: {_SUPPORTED_URLS})"
                )
            elif scheme == "memory":
                object.__setattr__(self, "redis", None)  # the url wins
            else:
                raise ConfigurationError(f"url: must be one of {_SUPPORTED_URLS}, got {self.url!r}")

    @property
    def transport_url(self) -> str:
        """The URL of the transport this config selects (password masked)."""
        if self.redis is not None:
            return self.redis.url
        return self.url or "memory://"

    @property
    def key_prefix(self) -> str:
        """The prefix of every key and channel."""
        return self.redis.key_prefix if self.redis is not None else "eventbus:"

    @classmethod
    def from_url(
        cls, url: str, *, service_name: str, token: str | None = None, **options: Any
    ) -> EventBusConfig:
        """A config for the transport at ``url``; ``options`` set other fields.

        ``token`` is the service token of an ``http(s)://`` gateway URL (it sets
        ``client``).

        Example::

            EventBusConfig.from_url(
                "redis://localhost:6379/0", service_name="photo-api", publish_timeout=1.0
            )
            EventBusConfig.from_url(
                "http://localhost:3003", service_name="thumbnailer", token=service_token
            )
        """
        if token is not None:
            _check(
                isinstance(url, str) and urlsplit(url).scheme.lower() in _GATEWAY_SCHEMES,
                "token",
                f"a token is for an http:// or https:// gateway URL, got {url!r}",
            )
            client = options.get("client")
            options["client"] = (
                ClientConfig(url=url, auth_token=token)
                if client is None
                else attrs.evolve(client, url=url, auth_token=token)
            )
        return cls(service_name=service_name, url=url, **options)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> EventBusConfig:
        """A config from environment variables; ``options`` override them.

        Reads ``EVENTBUS_URL`` (the transport URL), else ``REDIS_HOST``,
        ``REDIS_PORT``, ``REDIS_PASSWORD``, ``REDIS_USERNAME``, ``REDIS_DB``
        and ``EVENTBUS_KEY_PREFIX`` (Redis when any ``REDIS_*`` is set, else
        ``memory://``); ``EVENT_BUS_URL`` and ``EVENT_BUS_TOKEN`` (the gateway: the
        transport when neither ``EVENTBUS_URL`` nor a ``REDIS_*`` variable is set);
        ``SERVICE_NAME`` (default: the program's name); ``LOG_LEVEL``.

        Raises:
            ConfigurationError: a variable has an invalid value.
        """
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        url = env.get("EVENTBUS_URL")
        redis_vars = ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_USERNAME", "REDIS_DB")
        if url:
            prefix = env.get("EVENTBUS_KEY_PREFIX")
            if prefix is not None and urlsplit(url).scheme in _REDIS_SCHEMES:
                fields["redis"] = attrs.evolve(redis_config_from_url(url), key_prefix=prefix)
            else:
                fields["url"] = url
        elif any(env.get(name) for name in redis_vars):
            redis_fields: dict[str, Any] = {"host": env.get("REDIS_HOST") or "localhost"}
            if env.get("REDIS_PORT"):
                redis_fields["port"] = _convert(int, "REDIS_PORT", env["REDIS_PORT"])
            if env.get("REDIS_DB"):
                redis_fields["db"] = _convert(int, "REDIS_DB", env["REDIS_DB"])
            if env.get("REDIS_PASSWORD"):
                redis_fields["password"] = env["REDIS_PASSWORD"]
            if env.get("REDIS_USERNAME"):
                redis_fields["username"] = env["REDIS_USERNAME"]
            if env.get("EVENTBUS_KEY_PREFIX") is not None:
                redis_fields["key_prefix"] = env["EVENTBUS_KEY_PREFIX"]
            fields["redis"] = RedisConfig(**redis_fields)
        elif env.get("EVENT_BUS_URL"):
            # Only the Node library's gateway variable: the bus goes through the gateway.
            fields["url"] = env["EVENT_BUS_URL"]
        if env.get("EVENT_BUS_URL"):
            fields["client"] = ClientConfig(
                url=env["EVENT_BUS_URL"], auth_token=env.get("EVENT_BUS_TOKEN") or None
            )
        elif url and urlsplit(url).scheme.lower() in _GATEWAY_SCHEMES:
            fields["client"] = ClientConfig(url=url, auth_token=env.get("EVENT_BUS_TOKEN") or None)
        fields["service_name"] = env.get("SERVICE_NAME") or _program_name()
        if env.get("LOG_LEVEL"):
            fields["log_level"] = env["LOG_LEVEL"]
        fields.update(options)
        return cls(**fields)

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Any],
        *,
        prefix: str = "",
        ignore: Collection[str] = (),
        default_service_name: str | None = None,
    ) -> EventBusConfig:
        """A config from a settings mapping (``settings.EVENTBUS``, ``app.config``...).

        Each field is read from its upper-cased name after ``prefix``:
        ``PUBLISH_TIMEOUT``, or ``EVENTBUS_PUBLISH_TIMEOUT`` with
        ``prefix="EVENTBUS_"``. ``REDIS``, ``PERFORMANCE`` and ``CLIENT`` take a config
        or a dict of its fields (upper- or lower-case names). A ``REDIS`` dict and
        ``KEY_PREFIX`` refine the Redis settings of ``URL`` (ignored by other
        transports; a ``REDIS`` dict without ``URL`` selects Redis); a ``REDIS``
        config and ``URL`` exclude each other. A string is read as a number where the
        field is one (so environment variables work). ``SERVICE_NAME`` defaults to
        ``default_service_name``, else to the program's name. A key set to None
        counts as not set. Every key that starts with ``prefix`` must be one of these
        or of ``ignore`` (the caller's own keys, named without the prefix).

        Example::

            EventBusConfig.from_mapping(
                {"URL": "redis://localhost:6379/0", "SERVICE_NAME": "photo-api"}
            )
            EventBusConfig.from_mapping(app.config, prefix="EVENTBUS_", ignore=["HANDLERS"])

        Raises:
            ConfigurationError: an unknown key (with the closest known one), or an
                invalid value; the message names the key.
        """
        names = {f"{prefix}{field.name.upper()}": field for field in attrs.fields(cls)}
        prefix_key = f"{prefix}KEY_PREFIX"
        check_keys(
            (k for k in mapping if not prefix or (isinstance(k, str) and k.startswith(prefix))),
            {*names, prefix_key, *(f"{prefix}{name}" for name in ignore)},
        )
        nested: dict[str, type[Any]] = {"performance": PerformanceConfig, "client": ClientConfig}
        fields: dict[str, Any] = {}
        redis_fields: dict[str, Any] | None = None
        for key, field in names.items():
            value = mapping.get(key)
            if value is None:
                continue
            if field.name in nested:
                fields[field.name] = build_nested(nested[field.name], key, value)
            elif field.name == "redis" and not isinstance(value, RedisConfig):
                redis_fields = nested_fields(RedisConfig, key, value)
            elif field.name == "url" and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"{key}: must be a non-empty string, got {value!r}")
            else:
                fields[field.name] = read_scalar(field.default, key, value)
        if "url" in fields and "redis" in fields:
            raise ConfigurationError(f"{prefix}URL and {prefix}REDIS are both set; set one")
        if redis_fields is not None and "url" not in fields:
            fields["redis"] = RedisConfig()  # a REDIS dict without a URL selects Redis
        refine = redis_fields or {}
        key_prefix = mapping.get(prefix_key)
        if key_prefix is not None:
            _check(isinstance(key_prefix, str), prefix_key, f"must be a string, got {key_prefix!r}")
            refine["key_prefix"] = key_prefix
        fields.setdefault("service_name", default_service_name or _program_name())
        config = cls(**fields)
        if config.redis is not None and refine:
            config = attrs.evolve(config, redis=attrs.evolve(config.redis, **refine))
        return config


def _program_name() -> str:
    """A valid service name derived from the running program.

    ``gunicorn`` -> ``gunicorn``, ``worker.py`` -> ``worker``, ``python -m pkg`` ->
    ``pkg`` (from ``pkg/__main__.py``).
    """
    path = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    base = os.path.basename(path)
    if base == "__main__.py":
        base = os.path.basename(os.path.dirname(os.path.abspath(path)))
    base = base.removesuffix(".py") or "python"
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", base)[:100]
    return name or "python"
