"""The handle :meth:`EventBus.subscribe` returns."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from eventbus._models import Event, SubscriptionStats

if TYPE_CHECKING:
    from eventbus._runtime.dispatch import Route

__all__ = ["Subscription", "Unsubscriber"]


class Unsubscriber(Protocol):
    """What a :class:`Subscription` needs of the bus that made it."""

    def unsubscribe(self, subscription_id: str) -> bool:
        """Stop the subscription ``subscription_id``; False if it was not active."""
        ...


class Subscription:
    """One handler subscribed to a pattern; also a context manager.

    Example::

        sub = bus.subscribe("photo.*", handler)
        ...
        sub.unsubscribe()  # or bus.unsubscribe(sub.id)

        with bus.subscribe("photo.*", handler):
            ...  # unsubscribed on exit

    Attributes:
        id: unique within the process (``sub-<n>``).
        pattern: the glob pattern on event types.
        handler: the callable that receives each :class:`Event`.
    """

    __slots__ = ("_bus", "_route")

    def __init__(self, bus: Unsubscriber, route: Route) -> None:
        self._bus = bus
        self._route = route

    @property
    def id(self) -> str:
        """The subscription id, for :meth:`EventBus.unsubscribe`."""
        return self._route.id

    @property
    def pattern(self) -> str:
        """The pattern this subscription matches event types with."""
        return self._route.pattern.source

    @property
    def handler(self) -> Callable[[Event], Any]:
        """The subscribed handler."""
        return self._route.handler

    @property
    def active(self) -> bool:
        """False once unsubscribed."""
        return self._route.active

    def stats(self) -> SubscriptionStats:
        """This subscription's counters now."""
        return self._route.stats()

    def unsubscribe(self) -> bool:
        """Stop receiving; False if already unsubscribed."""
        return self._bus.unsubscribe(self.id)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<Subscription {self.id} {self.pattern!r} {state}>"
