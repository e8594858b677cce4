"""Tokens: HS256 JWTs checked with the key their ``kid`` names, and dev tokens minted.

A token's claims::

    {
        "sub": "user-456",
        "exp": 1767225600,
        "aud": "eventbus",
        "iat": ...,
        "rooms": ["photo:*"],  # room patterns this user may join
        "service": "thumbnailer",  # service tokens only (namespace /service)
        "scopes": ["publish:photo.*", "subscribe:photo.*", "rooms:photo:*", "presence"],
    }

``sub``, ``exp`` and ``aud`` are required; ``rooms`` and ``scopes`` are lists of strings.
Every refusal is an :class:`AuthError` whose ``code`` is ``unauthorized`` or
``token_expired``; its message says why but never echoes the token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import jwt

from eventbus._core.names import validate_user_id
from eventbus._core.patterns import Pattern, compile_glob
from eventbus._errors import ConfigurationError, EventBusError

__all__ = [
    "DEFAULT_AUDIENCE",
    "MIN_KEY_BYTES",
    "AuthError",
    "Claims",
    "TokenVerifier",
    "mint_token",
]

#: The ``aud`` every token carries unless the gateway is configured otherwise.
DEFAULT_AUDIENCE = "eventbus"
#: RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_KEY_BYTES = 32

_ALGORITHM = "HS256"
_MAX_TOKEN_CHARS = 8192
_MAX_LIST = 256
_MAX_ITEM_CHARS = 255


class AuthError(EventBusError):
    """A token was refused; ``code`` is ``unauthorized`` or ``token_expired``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))


@attrs.frozen(kw_only=True)
class Claims:
    """What a verified token says about its bearer.

    Attributes:
        sub: the user id (or the service's id for service tokens).
        exp: expiry, seconds since the epoch.
        rooms: room patterns (Redis glob) the bearer may join.
        scopes: a service token's scopes (``publish:T``, ``subscribe:T``, ``rooms:R``,
            ``presence``).
        service: the service name of a service token, else None.
        raw: every claim, as decoded.
    """

    sub: str
    exp: float
    rooms: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    service: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    _room_patterns: tuple[Pattern, ...] = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(
            lambda self: tuple(compile_glob(r) for r in self.rooms), takes_self=True
        ),
    )

    @property
    def user_room(self) -> str:
        """The bearer's own room, ``user:<sub>``."""
        return f"user:{self.sub}"

    def may_join(self, room: str) -> bool:
        """Whether the token's ``rooms`` patterns allow ``room`` (the default policy)."""
        return any(p.matches(room) for p in self._room_patterns)

    def seconds_left(self, now: float | None = None) -> float:
        """Seconds until ``exp`` (negative once expired)."""
        return self.exp - (time.time() if now is None else now)


def _string_list(payload: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = payload.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > _MAX_LIST:
        raise AuthError("unauthorized", f"claim {name!r} must be a list of strings")
    for item in value:
        if not isinstance(item, str) or not item or len(item) > _MAX_ITEM_CHARS:
            raise AuthError("unauthorized", f"claim {name!r} must be a list of strings")
    return tuple(value)


class TokenVerifier:
    """Checks HS256 tokens against keys by ``kid``, and an audience.

    Example::

        verifier = TokenVerifier({"k1": secret}, audience="eventbus")
        claims = verifier.verify(token)  # AuthError("unauthorized" | "token_expired")

    A token without ``kid`` is accepted only when exactly one key is configured.
    """

    def __init__(
        self, keys: Mapping[str, str], *, audience: str = DEFAULT_AUDIENCE, leeway: float = 0.0
    ) -> None:
        if not keys:
            raise ConfigurationError("keys: at least one signing key is needed")
        self._keys = dict(keys)
        self._audience = audience
        self._leeway = leeway

    @property
    def kids(self) -> list[str]:
        """The configured key ids, sorted."""
        return sorted(self._keys)

    def verify(self, token: object) -> Claims:
        """Check ``token`` and return its claims.

        Raises:
            AuthError: ``token_expired`` when ``exp`` has passed; ``unauthorized`` for
                anything else (not a string, bad signature, unknown ``kid``, wrong
                audience, a required claim missing or malformed).
        """
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            raise AuthError("unauthorized", "a token (string) is required in auth.token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("unauthorized", "the token is not a JWT") from None
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            secret = next(iter(self._keys.values()))
        elif isinstance(kid, str) and kid in self._keys:
            secret = self._keys[kid]
        else:
            raise AuthError("unauthorized", "the token's kid names no configured key")
        try:
            payload = jwt.decode(
                token,
                secret,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("unauthorized", f"invalid token: {exc}") from None
        return self._claims(payload)

    def _claims(self, payload: dict[str, Any]) -> Claims:
        sub = payload.get("sub")
        try:
            validate_user_id(sub)
        except ValueError:
            raise AuthError("unauthorized", "claim 'sub' is not a valid user id") from None
        exp = payload.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthError("unauthorized", "claim 'exp' must be a number")
        service = payload.get("service")
        if service is not None and (not isinstance(service, str) or not service):
            raise AuthError("unauthorized", "claim 'service' must be a non-empty string")
        return Claims(
            sub=str(sub),
            exp=float(exp),
            rooms=_string_list(payload, "rooms"),
            scopes=_string_list(payload, "scopes"),
            service=service,
            raw=payload,
        )


def mint_token(
    *,
    kid: str,
    secret: str,
    sub: str,
    ttl: float = 3600.0,
    rooms: Sequence[str] = (),
    scopes: Sequence[str] = (),
    service: str | None = None,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> str:
    """Sign a token for ``sub`` valid ``ttl`` seconds (for development and tests).

    Example::

        token = mint_token(kid="k1", secret=secret, sub="user-456", rooms=["photo:*"])

    Raises:
        ConfigurationError: ``sub`` is not a valid user id, the secret is shorter than
            32 bytes, or ``ttl`` is not a finite number.
    """
    try:
        validate_user_id(sub)
    except ValueError as exc:
        raise ConfigurationError(f"sub: {exc}") from None
    if len(secret.encode()) < MIN_KEY_BYTES:
        raise ConfigurationError(f"key {kid!r}: HS256 needs a secret of at least 32 bytes")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl != ttl:
        raise ConfigurationError(f"ttl: must be a number, got {ttl!r}")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": sub,
        "aud": audience,
        "iat": int(issued),
        "exp": int(issued + ttl),
    }
    if rooms:
        claims["rooms"] = list(rooms)
    if scopes:
        claims["scopes"] = list(scopes)
    if service is not None:
        claims["service"] = service
    return jwt.encode(claims, secret, algorithm=_ALGORITHM, headers={"kid": kid})
