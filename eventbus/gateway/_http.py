"""The dashboard's plain HTTP: ASGI routing, query parsing, headers, the admin token.

What :mod:`eventbus.gateway.dashboard` needs of HTTP, apart from what it shows:
:class:`Router` serves the page's three static files and the JSON endpoints it is
given, answers every refusal as ``{"error": code, "message": text}`` with its status
(counted under the ``dashboard_*`` counter it names), any other failure as a logged and
counted 500, and every answer with the security headers of the page (a strict
Content-Security-Policy, no referrer, no framing, no caching). :func:`require_admin`
checks the bearer token of an API request; :func:`query`, :func:`int_param` and
:func:`float_param` read the query string strictly.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from eventbus.gateway._auth import AuthError, TokenVerifier

__all__ = [
    "ADMIN_SCOPE",
    "STATIC_DIR",
    "Endpoint",
    "HTTPError",
    "Receive",
    "Router",
    "Scope",
    "Send",
    "float_param",
    "int_param",
    "query",
    "require_admin",
    "wait_disconnect",
]

log = logging.getLogger("eventbus.gateway.dashboard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An API endpoint: (scope, receive, the parsed query) -> the JSON document to answer.
Endpoint = Callable[[Scope, Receive, dict[str, str]], Awaitable[Any]]

ADMIN_SCOPE = "admin"
"""The token scope that opens the dashboard's API."""

STATIC_DIR = Path(__file__).with_name("static")
"""Where the page's files live (shipped as package data)."""

_STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]


class HTTPError(Exception):
    """Answer the request with ``status`` and ``{"error": code, "message": message}``;
    ``counter`` names the gateway counter it bumps."""

    def __init__(self, status: int, code: str, message: str, *, counter: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.counter = counter


def _malformed(message: str) -> HTTPError:
    return HTTPError(400, "malformed", message, counter="dashboard_malformed")


def _unauthorized(message: str) -> HTTPError:
    return HTTPError(401, "unauthorized", message, counter="dashboard_unauthorized")


class Router:
    """The ASGI app of the page and its API (``http`` and ``lifespan``; a WebSocket is
    closed with 1008).

    Args:
        api: the JSON endpoints by path, each with the query parameters it accepts.
        startup, shutdown: run on the ASGI lifespan's startup and shutdown.
        count: bumps a gateway counter.
        max_query: the longest query string accepted, bytes (414 beyond).
    """

    def __init__(
        self,
        *,
        api: Mapping[str, tuple[frozenset[str], Endpoint]],
        startup: Callable[[], Awaitable[None]],
        shutdown: Callable[[], Awaitable[None]],
        count: Callable[[str], None],
        max_query: int,
    ) -> None:
        self._api = api
        self._startup = startup
        self._shutdown = shutdown
        self._count = count
        self._max_query = max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        kind = scope.get("type")
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, content_type = await self._route(scope, receive)
        except HTTPError as exc:
            if exc.counter is not None:
                self._count(exc.counter)
            status, content_type = exc.status, "application/json"
            body = json.dumps({"error": exc.code, "message": exc.message}).encode()
        except Exception:  # a bug or Redis failure: answer 500, log, count, keep serving
            log.exception("dashboard request %s failed", scope.get("path"))
            self._count("dashboard_errors")
            status, content_type = 500, "application/json"
            body = b'{"error":"internal","message":"see the gateway log"}'
        headers = [(b"content-type", content_type.encode()), *_SECURITY_HEADERS]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="eventbus-dashboard"'))
        headers.append((b"content-length", str(len(body)).encode()))
        if scope.get("method") == "HEAD":
            body = b""
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, bytes, str]:
        path = scope.get("path", "")
        raw_query: bytes = scope.get("query_string", b"")
        if len(path) > 256 or len(raw_query) > self._max_query:
            raise HTTPError(414, "too_long", "the URL is too long", counter="dashboard_malformed")
        if scope.get("method") not in ("GET", "HEAD"):
            raise HTTPError(405, "method_not_allowed", "only GET", counter="dashboard_malformed")
        if path in _STATIC_FILES:
            name, content_type = _STATIC_FILES[path]
            return 200, (STATIC_DIR / name).read_bytes(), content_type
        if path in self._api:
            params, endpoint = self._api[path]
            document = await endpoint(scope, receive, query(raw_query, params))
            return 200, json.dumps(document).encode(), "application/json"
        raise HTTPError(
            404, "not_found", f"no such page: {path[:80]!r}", counter="dashboard_not_found"
        )


def query(raw: bytes, allowed: frozenset[str]) -> dict[str, str]:
    """The parameters of query string ``raw``, each at most once and all in ``allowed``.

    Raises:
        HTTPError: 400 ``malformed``.
    """
    try:
        pairs = urllib.parse.parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, strict_parsing=bool(raw)
        )
    except (UnicodeDecodeError, ValueError):
        raise _malformed("unreadable query string") from None
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed or key in found:
            raise _malformed(f"unexpected or repeated query parameter {key[:40]!r}")
        found[key] = value
    return found


def int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """Parameter ``name`` as an integer in ``[low, high]`` (``default`` when absent).

    Raises:
        HTTPError: 400 ``malformed``.
    """
    if name not in params:
        return default
    text = params[name]
    if not text.isdigit() or len(text) > 16 or not low <= int(text) <= high:
        raise _malformed(f"{name} must be an integer from {low} to {high}")
    return int(text)


def float_param(
    params: Mapping[str, str], name: str, default: float, low: float, high: float
) -> float:
    """Parameter ``name`` as a number in ``[low, high]`` (``default`` when absent).

    Raises:
        HTTPError: 400 ``malformed`` (NaN included).
    """
    if name not in params:
        return default
    try:
        value = float(params[name]) if len(params[name]) <= 16 else math.nan
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # NaN fails too
        raise _malformed(f"{name} must be a number from {low:g} to {high:g}")
    return value


def require_admin(scope: Scope, verifier: TokenVerifier, *, max_token: int) -> None:
    """Require ``Authorization: Bearer <JWT>`` with the ``admin`` scope, checked by
    ``verifier``.

    Raises:
        HTTPError: 401 ``unauthorized`` or ``token_expired`` (no, a too long or a bad
            token), 403 ``forbidden`` (a valid token without the scope).
    """
    header = b""
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            header = value
            break
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        raise _unauthorized("an admin token is required (Authorization: Bearer <JWT>)")
    if len(token) > max_token:
        raise _unauthorized("the token is too long")
    try:
        claims = verifier.verify(token.strip().decode("ascii"))
    except UnicodeDecodeError:
        raise _unauthorized("the token is not ASCII") from None
    except AuthError as exc:
        raise HTTPError(401, exc.code, exc.message, counter="dashboard_unauthorized") from None
    if ADMIN_SCOPE not in claims.scopes:
        raise HTTPError(
            403, "forbidden", "the token lacks the 'admin' scope", counter="dashboard_unauthorized"
        )


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client of an HTTP request has gone (``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass
