"""Subscription arguments as values, checked once on construction, before any I/O.

:class:`SubscribeOptions` is everything :meth:`EventBus.subscribe
<eventbus.EventBus.subscribe>` takes; the bus, the Flask extension and Django's
declared handlers each build one, so every subscription is checked by the same rules
wherever it is written, with no bus to check it on. :class:`GroupOptions` is how a
durable group subscription consumes its stream (see the docs' page on groups).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from eventbus._core.filters import FilterPredicate, FilterSpec, compile_filter
from eventbus._core.names import validate_group
from eventbus._core.patterns import Pattern, compile_pattern
from eventbus._errors import ConfigurationError, ValidationError

__all__ = ["SUBSCRIBE_KEYWORDS", "GroupOptions", "SubscribeOptions"]

SUBSCRIBE_KEYWORDS = (
    "retry_on_error",
    "max_retries",
    "timeout",
    "filter",
    "concurrency",
    "group",
    "group_options",
)
"""The keyword options of :meth:`EventBus.subscribe <eventbus.EventBus.subscribe>`."""


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{attribute.name}: must be a number > 0, got {value!r}")


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{attribute.name}: must be an integer > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class GroupOptions:
    """How one durable group subscription consumes its stream.

    Example::

        bus.subscribe(
            "photo.uploaded",
            make_thumbnail,
            group="thumbnailer",
            group_options=GroupOptions(max_deliveries=3, claim_idle=60),
        )

    Attributes:
        start: where the consumer group starts when it is created on a stream that
            already holds entries (a new group's stream is created empty, so it
            matters when the group was deleted or lost while its stream survived):
            ``"$"`` (events appended from now on, the default), ``"0"`` (everything
            still in the stream), or a datetime (entries appended since then).
        consumer: this consumer's name in the group; default
            ``<client id>:<subscription id>``, so each process (and each group
            subscription in it) is its own consumer and a restarted process is a new
            consumer (the old one's pending events are taken over after
            ``claim_idle``).
        batch_size: entries read per round trip.
        max_in_flight: entries read and not yet finished, at most; reading pauses at it.
        maxlen: the stream's retention, about this many entries (``XADD MAXLEN ~``);
            None keeps everything. Every registration writes it: the subscriber that
            registered the group last sets it for every publisher.
        claim_idle: seconds an entry may stay unacknowledged with one consumer before
            another takes it over (a crashed or stuck consumer's events).
        max_deliveries: deliveries (attempts across consumers, retries not counted)
            after which a failing entry goes to the dead-letter stream.
        block: how long one read waits for new entries, seconds.
    """

    start: str | dt.datetime = "$"
    consumer: str | None = None
    batch_size: int = attrs.field(default=10, validator=_positive_int)
    max_in_flight: int = attrs.field(default=100, validator=_positive_int)
    maxlen: int | None = 100_000
    claim_idle: float = attrs.field(default=30.0, validator=_positive)
    max_deliveries: int = attrs.field(default=5, validator=_positive_int)
    block: float = attrs.field(default=1.0, validator=_positive)

    def start_id(self) -> str:
        """The stream id a new consumer group starts after."""
        if isinstance(self.start, dt.datetime):
            moment = self.start if self.start.tzinfo else self.start.replace(tzinfo=dt.UTC)
            return f"{int(moment.timestamp() * 1000)}-0"
        if self.start in ("$", "0"):
            return self.start
        raise ConfigurationError(f"start: must be '$', '0' or a datetime, got {self.start!r}")


@attrs.frozen(kw_only=True)
class SubscribeOptions:
    """One subscription's arguments, checked: what :meth:`EventBus.subscribe
    <eventbus.EventBus.subscribe>` takes, as a value.

    The fields are the arguments of ``subscribe`` (see there); construction checks
    them in the order the bus always has, and compiles the pattern and the filter.
    ``max_retries`` stays None when not given: the bus's
    ``config.performance.max_retries`` applies.

    Example::

        options = SubscribeOptions(pattern="photo.*", handler=print, concurrency=4)
        bus.subscribe(options.pattern, options.handler, **options.keywords())

    Raises:
        InvalidPatternError, InvalidFilterError, InvalidNameError, ValidationError:
            an argument is invalid; ConfigurationError: ``group_options.start`` is.
    """

    pattern: str
    handler: Callable[[Any], Any]
    retry_on_error: bool = False
    max_retries: int | None = None
    timeout: float | None = None
    filter: FilterSpec | None = None
    concurrency: int = 1
    group: str | None = None
    group_options: GroupOptions | None = None
    matcher: Pattern = attrs.field(init=False, repr=False, eq=False)
    """The compiled pattern."""
    event_filter: FilterPredicate | None = attrs.field(init=False, repr=False, eq=False)
    """The compiled filter, or None."""

    def __attrs_post_init__(self) -> None:
        matcher = compile_pattern(self.pattern)
        if not callable(self.handler):
            raise ValidationError(f"handler must be callable, got {self.handler!r}")
        concurrency = self.concurrency
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValidationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        timeout = self.timeout
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise ValidationError(f"timeout must be a number > 0 or None, got {timeout!r}")
        retries = self.max_retries
        if retries is not None and (
            not isinstance(retries, int) or isinstance(retries, bool) or retries < 0
        ):
            raise ValidationError(f"max_retries must be an integer >= 0, got {retries!r}")
        event_filter = compile_filter(self.filter)
        if self.group is not None:
            validate_group(self.group)
            if self.group_options is not None:
                if not isinstance(self.group_options, GroupOptions):
                    raise ValidationError(
                        f"group_options must be a GroupOptions, got {self.group_options!r}"
                    )
                self.group_options.start_id()  # a bad start fails here, before any I/O
        elif self.group_options is not None:
            raise ValidationError("group_options needs group=")
        object.__setattr__(self, "matcher", matcher)
        object.__setattr__(self, "event_filter", event_filter)

    @classmethod
    def from_keywords(
        cls, pattern: str, handler: Callable[[Any], Any], keywords: Mapping[str, Any]
    ) -> SubscribeOptions:
        """The options of ``subscribe(pattern, handler, **keywords)``.

        For APIs that take ``subscribe``'s options as ``**options`` and check them
        before any bus exists.

        Raises:
            ValidationError: a keyword ``subscribe`` does not take, or a bad value
                (and the errors of the class).
        """
        unknown = sorted(str(name) for name in keywords if name not in SUBSCRIBE_KEYWORDS)
        if unknown:
            raise ValidationError(
                f"subscribe: unexpected keyword argument(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(SUBSCRIBE_KEYWORDS)})"
            )
        return cls(pattern=pattern, handler=handler, **keywords)

    def keywords(self) -> dict[str, Any]:
        """The keyword options, as given: ``subscribe(pattern, handler, **keywords())``."""
        return {name: getattr(self, name) for name in SUBSCRIBE_KEYWORDS}

    def retries(self, default: int) -> int:
        """Retries after the first attempt: 0 without ``retry_on_error``, else
        ``max_retries`` or, when that is None, ``default``."""
        if not self.retry_on_error:
            return 0
        return default if self.max_retries is None else self.max_retries
