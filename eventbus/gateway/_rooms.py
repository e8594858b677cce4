"""Which rooms a socket may join: payload parsing and the deny-by-default policy.

The rules, in order:

1. the payload must be ``{"room": R}`` or a bare string ``R`` (else ``malformed``);
2. ``R`` must follow the room naming rules (else ``invalid_room``);
3. a socket is always in its own user room ``user:<sub>``; it may never join another
   user's room (``forbidden``), whatever its token or policy say;
4. any other room needs the policy's yes: the configured ``authorize(claims, room)``,
   else the token's ``rooms`` patterns (``forbidden`` otherwise).
"""

from __future__ import annotations

import inspect
from typing import Any

from eventbus._core.names import validate_room
from eventbus.gateway._auth import Claims
from eventbus.gateway._config import AuthorizePolicy

__all__ = ["RoomRequestError", "decide", "parse_room_request", "token_rooms_policy"]


class RoomRequestError(Exception):
    """A join/leave was refused; ``code`` goes into the ack's ``error``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_room_request(data: Any) -> str:
    """The room named by a ``join``/``leave`` payload.

    Raises:
        RoomRequestError: ``malformed`` (not ``{"room": str}`` or a string) or
            ``invalid_room`` (breaks the naming rules).
    """
    if isinstance(data, dict):
        if set(data) - {"room"}:
            raise RoomRequestError("malformed", 'the payload must be {"room": "<name>"}')
        room = data.get("room")
    else:
        room = data
    if not isinstance(room, str):
        raise RoomRequestError("malformed", 'the payload must be {"room": "<name>"}')
    try:
        return validate_room(room)
    except ValueError as exc:
        raise RoomRequestError("invalid_room", str(exc)) from None


def token_rooms_policy(claims: Claims, room: str) -> bool:
    """The default policy: the token's ``rooms`` patterns (Redis glob) decide."""
    return claims.may_join(room)


async def decide(claims: Claims, room: str, authorize: AuthorizePolicy | None) -> bool:
    """Whether ``claims`` may be in ``room`` (rules 3 and 4 of the module docs)."""
    if room == claims.user_room:
        return True
    if room.startswith("user:"):
        return False
    policy = authorize or token_rooms_policy
    verdict = policy(claims, room)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return verdict is True
