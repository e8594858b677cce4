"""The gateway's configuration: one frozen value, validated before any I/O.

Build it directly or from the environment (:meth:`GatewayConfig.from_env`); the
``eventbus gateway`` command builds it from its options. Every invalid value raises
:class:`~eventbus.ConfigurationError` naming the field, before a socket is opened.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from eventbus._core.config import RedisConfig, redis_config_from_url
from eventbus._errors import ConfigurationError
from eventbus.gateway._auth import DEFAULT_AUDIENCE, MIN_KEY_BYTES, Claims

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_PORT",
    "MIN_KEY_BYTES",
    "AuthorizePolicy",
    "GatewayConfig",
    "parse_keys",
]

DEFAULT_PORT = 3003

#: ``authorize(claims, room) -> bool`` (or an awaitable of it): may this socket join ``room``?
AuthorizePolicy = Callable[[Claims, str], "bool | Awaitable[bool]"]

_KID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SERVICE_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise ConfigurationError(f"{field}: {message}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check(_number(value) and value > 0, attribute.name, f"must be a number > 0, got {value!r}")  # type: ignore[operator]


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check(
        _number(value) and value >= 0,  # type: ignore[operator]
        attribute.name,
        f"must be a number >= 0, got {value!r}",
    )


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        attribute.name,
        f"must be an integer > 0, got {value!r}",
    )


def parse_keys(text: str) -> dict[str, str]:
    """Parse signing keys written as ``"kid1:secret1,kid2:secret2"``.

    This is the format of ``EVENTBUS_GATEWAY_KEYS`` and ``--keys``. A secret may
    contain ``:`` (only the first one separates the kid); it may not contain ``,``.

    Raises:
        ConfigurationError: an entry has no ``:``, an empty kid or secret, or a kid
            appears twice.
    """
    keys: dict[str, str] = {}
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        kid, sep, secret = entry.partition(":")
        _check(
            bool(sep) and bool(kid) and bool(secret),
            "keys",
            f"each entry must be KID:SECRET, got {kid + ':***' if sep else entry!r}",
        )
        _check(kid not in keys, "keys", f"kid {kid!r} appears twice")
        keys[kid] = secret
    return keys


def _to_keys(value: object) -> dict[str, str]:
    if isinstance(value, str):
        return parse_keys(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigurationError(f"keys: must be a mapping kid -> secret, got {type(value).__name__}")


def _to_origins(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(o.strip() for o in value.split(",") if o.strip())
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(value)
    raise ConfigurationError(f"origins: must be a list of origins, got {value!r}")


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """How one gateway process listens, whom it lets in, and its limits.

    Example::

        GatewayConfig(
            redis_url="redis://localhost:6379/0",
            keys={"2025-01": "a-secret-of-at-least-32-bytes..."},
            origins=("https://app.example.com",),
        )

    Attributes:
        host, port: where uvicorn listens (``127.0.0.1:3003``).
        redis_url: the Redis the buses use (``redis://``, ``rediss://``, ``unix://``);
            its ``?key_prefix=`` is honoured.
        redis: a :class:`~eventbus.RedisConfig` instead of ``redis_url`` (after
            construction this always holds the config in force).
        key_prefix: overrides the URL's key prefix when set.
        keys: HS256 signing keys by ``kid`` (``{"kid": "secret"}`` or the string
            ``"kid1:s1,kid2:s2"``); every secret at least 32 bytes. Several keys allow
            rotation: a token is checked with the key its header's ``kid`` names.
        audience: the ``aud`` every token must carry.
        origins: browser origins allowed by CORS (``"*"`` for any); empty means
            same-origin only. Clients that send no ``Origin`` (servers) are not
            affected.
        authorize: an optional ``authorize(claims, room) -> bool`` (sync or async)
            that decides which rooms other than the user's own a socket may join;
            by default the token's ``rooms`` patterns decide.
        max_payload: the largest accepted client message, bytes (the JSON of its
            arguments); larger ones are refused with ``payload_too_large``. Frames
            above ``16 * max_payload`` (at least 1 MiB) close the connection.
        max_rooms_per_socket: rooms a socket may join besides its user room.
        connect_rate, connect_burst: new connections per second per client IP, and
            the burst allowed above it (a token bucket); ``connect_rate=0`` disables.
        presence_ttl, heartbeat_interval: a socket's room membership lives
            ``presence_ttl`` seconds in Redis and is refreshed every
            ``heartbeat_interval`` (which must be below it), so a crashed gateway's
            members disappear within ``presence_ttl``.
        service_name: the name this node registers in the clients registry (``eventbus
            stats``).
        shutdown_timeout: how long a graceful stop waits for open connections.
    """

    host: str = attrs.field(default="127.0.0.1")
    port: int = attrs.field(default=DEFAULT_PORT)
    redis_url: str = attrs.field(default="redis://localhost:6379/0")
    redis: RedisConfig | None = attrs.field(default=None)
    key_prefix: str | None = attrs.field(default=None)
    keys: dict[str, str] = attrs.field(converter=_to_keys)
    audience: str = attrs.field(default=DEFAULT_AUDIENCE)
    origins: tuple[str, ...] = attrs.field(default=(), converter=_to_origins)
    authorize: AuthorizePolicy | None = attrs.field(default=None, eq=False)
    max_payload: int = attrs.field(default=64 * 1024, validator=_positive_int)
    max_rooms_per_socket: int = attrs.field(default=100, validator=_positive_int)
    connect_rate: float = attrs.field(default=20.0, validator=_non_negative)
    connect_burst: int = attrs.field(default=40, validator=_positive_int)
    presence_ttl: float = attrs.field(default=15.0, validator=_positive)
    heartbeat_interval: float = attrs.field(default=5.0, validator=_positive)
    service_name: str = attrs.field(default="gateway")
    shutdown_timeout: float = attrs.field(default=5.0, validator=_positive)

    @host.validator
    def _check_host(self, _attribute: attrs.Attribute[str], value: object) -> None:
        _check(isinstance(value, str) and value != "", "host", f"must be a host, got {value!r}")

    @port.validator
    def _check_port(self, _attribute: attrs.Attribute[int], value: object) -> None:
        _check(
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 65536,
            "port",
            f"must be 0-65535 (0: any free port), got {value!r}",
        )

    @keys.validator
    def _check_keys(
        self, _attribute: attrs.Attribute[dict[str, str]], value: dict[str, str]
    ) -> None:
        _check(
            bool(value),
            "keys",
            "at least one signing key is needed (--keys / EVENTBUS_GATEWAY_KEYS KID:SECRET)",
        )
        for kid, secret in value.items():
            _check(
                isinstance(kid, str) and _KID_RE.fullmatch(kid) is not None,
                "keys",
                f"a kid must be 1-64 of A-Z a-z 0-9 _ . -, got {kid!r}",
            )
            _check(isinstance(secret, str), "keys", f"the secret of {kid!r} must be a string")
            _check(
                len(secret.encode()) >= MIN_KEY_BYTES,
                "keys",
                f"the secret of {kid!r} is {len(secret.encode())} bytes; HS256 needs at "
                f"least {MIN_KEY_BYTES} (RFC 7518 §3.2)",
            )

    @audience.validator
    def _check_audience(self, _attribute: attrs.Attribute[str], value: object) -> None:
        _check(isinstance(value, str) and value != "", "audience", "must be a non-empty string")

    @origins.validator
    def _check_origins(self, _attribute: attrs.Attribute[Any], value: tuple[object, ...]) -> None:
        for origin in value:
            _check(
                isinstance(origin, str)
                and (origin == "*" or re.fullmatch(r"https?://[^/\s]+", origin) is not None),
                "origins",
                f"each origin must be '*' or scheme://host[:port] with no path, got {origin!r}",
            )

    @authorize.validator
    def _check_authorize(self, _attribute: attrs.Attribute[Any], value: object) -> None:
        _check(value is None or callable(value), "authorize", f"must be callable, got {value!r}")

    @service_name.validator
    def _check_service_name(self, _attribute: attrs.Attribute[str], value: object) -> None:
        _check(
            isinstance(value, str) and _SERVICE_RE.fullmatch(value) is not None,
            "service_name",
            f"must be 1-100 of A-Z a-z 0-9 _ . -, got {value!r}",
        )

    def __attrs_post_init__(self) -> None:
        _check(
            self.heartbeat_interval < self.presence_ttl,
            "heartbeat_interval",
            f"must be below presence_ttl ({self.presence_ttl}), got {self.heartbeat_interval}",
        )
        if self.redis is not None:
            _check(
                isinstance(self.redis, RedisConfig),
                "redis",
                f"must be a RedisConfig, got {self.redis!r}",
            )
            redis = self.redis
        else:
            redis = redis_config_from_url(self.redis_url)
        if self.key_prefix is not None:
            redis = attrs.evolve(redis, key_prefix=self.key_prefix)
        object.__setattr__(self, "redis", redis)

    @property
    def redis_config(self) -> RedisConfig:
        """The Redis connection settings in force."""
        assert self.redis is not None  # set by __attrs_post_init__
        return self.redis

    @property
    def prefix(self) -> str:
        """The key prefix in force (from ``key_prefix``, else the URL, else ``eventbus:``)."""
        return self.redis_config.key_prefix

    @property
    def cors_allowed_origins(self) -> list[str] | str | None:
        """``origins`` in python-socketio's form (None: same origin only)."""
        if "*" in self.origins:
            return "*"
        return list(self.origins) or None

    @property
    def hard_payload_limit(self) -> int:
        """Engine.IO's frame limit: a frame above it closes the connection."""
        return max(1024 * 1024, 16 * self.max_payload)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> GatewayConfig:
        """Build a config from ``EVENTBUS_URL`` (else ``redis://localhost:6379/0``),
        ``EVENTBUS_GATEWAY_KEYS``, ``EVENTBUS_GATEWAY_ORIGINS``,
        ``EVENTBUS_GATEWAY_AUDIENCE`` and ``EVENTBUS_KEY_PREFIX``; ``options`` win.

        Raises:
            ConfigurationError: a value is missing or invalid.
        """
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        if env.get("EVENTBUS_URL"):
            fields["redis_url"] = env["EVENTBUS_URL"]
        if env.get("EVENTBUS_GATEWAY_KEYS"):
            fields["keys"] = env["EVENTBUS_GATEWAY_KEYS"]
        if env.get("EVENTBUS_GATEWAY_ORIGINS"):
            fields["origins"] = env["EVENTBUS_GATEWAY_ORIGINS"]
        if env.get("EVENTBUS_GATEWAY_AUDIENCE"):
            fields["audience"] = env["EVENTBUS_GATEWAY_AUDIENCE"]
        if env.get("EVENTBUS_KEY_PREFIX"):
            fields["key_prefix"] = env["EVENTBUS_KEY_PREFIX"]
        fields.update(options)
        if "keys" not in fields:
            raise ConfigurationError(
                "keys: at least one signing key is needed (--keys / EVENTBUS_GATEWAY_KEYS KID:SECRET)"
            )
        return cls(**fields)
