"""Transports, chosen by URL scheme; the bus only sees the protocols of
:mod:`eventbus._transports.base` (why, and which URL picks what: docs/decisions.md,
"Transports"; docs/configuration.md, "Choosing the transport").

Each concrete transport is imported inside :func:`create_transport`, so importing the
pure core never imports ``redis`` or ``socketio``. A new transport (Sentinel, Cluster)
is one more scheme here and one more folder beside ``memory/``, ``redis/`` and
``gateway/``; nothing above this package changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from eventbus._errors import ConfigurationError

if TYPE_CHECKING:
    from eventbus._core.config import ClientConfig, RedisConfig
    from eventbus._transports.base import Transport

__all__ = ["create_transport"]

_SUPPORTED = "memory://, redis://, rediss://, unix://, http://, https://"
_PLANNED = ("redis+sentinel", "redis+cluster")


def create_transport(
    url: str | None,
    *,
    redis: RedisConfig | None,
    client_name: str,
    control_channel: str,
    client: ClientConfig | None = None,
) -> Transport:
    """Build the transport a URL names.

    ``memory://...`` gives the in-process broker; ``redis://``, ``rediss://`` and
    ``unix://`` the Redis transport, configured by ``redis`` when given (it was parsed
    from the same URL, perhaps with overrides) and else by parsing ``url``. With no
    ``url``, ``redis`` is required. ``http://`` and ``https://`` give the gateway
    transport, configured by ``client``, which must carry a token.

    Args:
        url: the transport URL, or None to use ``redis``.
        redis: Redis settings, if already parsed.
        client_name: the bus's client id (Redis ``CLIENT SETNAME``).
        control_channel: the bus's private channel (listener wake-ups).
        client: the gateway settings (URL, token) for an ``http(s)://`` URL.

    Raises:
        ConfigurationError: the scheme is unknown or not supported yet, or the URL
            is invalid.

    Example::

        transport = create_transport(
            "redis://localhost:6379/0",
            redis=None,
            client_name="photo-api:web-1:4242:0",
            control_channel="eventbus:ctl:photo-api:web-1:4242:0",
        )
    """
    if url is None:
        if redis is None:
            raise ConfigurationError("no transport: give a URL or a RedisConfig")
        return _redis_transport(redis, client_name, control_channel)
    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    if scheme == "memory":
        from eventbus._transports.memory.transport import MemoryTransport

        return MemoryTransport.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        if redis is None:
            from eventbus._core.config import redis_config_from_url

            redis = redis_config_from_url(url)
        return _redis_transport(redis, client_name, control_channel)
    if scheme in ("http", "https"):
        from eventbus._transports.gateway.transport import GatewayTransport

        if client is None or client.auth_token is None:
            raise ConfigurationError(
                f"the {scheme}:// gateway transport needs a service token (ClientConfig)"
            )
        if client.url != url:
            import attrs

            client = attrs.evolve(client, url=str(url))
        return GatewayTransport(client, client_name=client_name, control_channel=control_channel)
    if scheme in _PLANNED:
        raise ConfigurationError(
            f"the {scheme}:// transport is not supported yet (supported: {_SUPPORTED})"
        )
    shown = f"{scheme}://" if scheme else repr(url) if isinstance(url, str) else repr(type(url))
    raise ConfigurationError(f"unknown transport URL {shown}; supported: {_SUPPORTED}")


def _redis_transport(config: RedisConfig, client_name: str, control_channel: str) -> Transport:
    from eventbus._transports.redis.transport import RedisTransport

    return RedisTransport(config, client_name=client_name, control_channel=control_channel)
