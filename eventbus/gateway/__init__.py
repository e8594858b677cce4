"""The real-time gateway: events reach browsers over Socket.IO (``eventbus gateway``).

The one asyncio component of eventbus: a python-socketio ``AsyncServer`` under uvicorn
that relays room, user and broadcast events from Redis to WebSocket clients, with JWT
auth, rooms, presence and limits. Install the extra:
``pip install 'shared-infra-event-bus[gateway]'``.

Example::

    from eventbus.gateway import GatewayConfig, serve

    serve(GatewayConfig(redis_url="redis://localhost:6379/0", keys={"k1": secret}))

``import eventbus`` never imports this package (nor socketio, uvicorn or jwt).
"""

from __future__ import annotations

import importlib.util

_MISSING = [
    name
    for name in ("socketio", "engineio", "uvicorn", "jwt", "websockets")
    if importlib.util.find_spec(name) is None
]
if _MISSING:  # pragma: no cover - the test environment has the extra
    raise ImportError(
        f"eventbus.gateway needs {', '.join(_MISSING)}: pip install 'shared-infra-event-bus[gateway]'"
    )

from eventbus.gateway._app import Gateway, build_app  # noqa: E402
from eventbus.gateway._auth import AuthError, Claims, TokenVerifier, mint_token  # noqa: E402
from eventbus.gateway._config import (  # noqa: E402
    AuthorizePolicy,
    GatewayConfig,
    parse_keys,
)
from eventbus.gateway._rooms import token_rooms_policy  # noqa: E402
from eventbus.gateway._serve import serve  # noqa: E402
from eventbus.gateway._types import SocketState  # noqa: E402

__all__ = [
    "AuthError",
    "AuthorizePolicy",
    "Claims",
    "Gateway",
    "GatewayConfig",
    "SocketState",
    "TokenVerifier",
    "build_app",
    "mint_token",
    "parse_keys",
    "serve",
    "token_rooms_policy",
]
