"""Arguments as values: SubscribeOptions and prepare(), checked with no bus (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eventbus import (
    EventBusConfig,
    EventTooLargeError,
    GroupOptions,
    InvalidFilterError,
    InvalidNameError,
    InvalidPatternError,
    SerializationError,
    ValidationError,
)
from eventbus._core.envelope import decode, seal
from eventbus._core.options import SUBSCRIBE_KEYWORDS, SubscribeOptions
from eventbus._core.outgoing import Sender, prepare

# -- SubscribeOptions -------------------------------------------------------------------


def test_subscribe_options_compile_the_pattern_and_filter_and_keep_what_was_given() -> None:
    """A valid value compiles its pattern and mapping filter; keywords() gives back the
    options as passed, ready for subscribe(**...)."""
    where = {"field": "data.size", "operator": "greaterThan", "value": 10}
    options = SubscribeOptions(pattern="photo.*", handler=print, filter=where, concurrency=2)
    assert options.matcher.matches("photo.uploaded")
    assert options.event_filter is not None
    assert options.keywords() == {
        "retry_on_error": False,
        "max_retries": None,
        "timeout": None,
        "filter": where,
        "concurrency": 2,
        "group": None,
        "group_options": None,
    }
    assert tuple(options.keywords()) == SUBSCRIBE_KEYWORDS


def test_subscribe_options_retries_follow_retry_on_error_and_the_default() -> None:
    """retries(): 0 without retry_on_error, else max_retries, else the bus's default."""
    assert SubscribeOptions(pattern="a", handler=print, max_retries=5).retries(3) == 0
    assert SubscribeOptions(pattern="a", handler=print, retry_on_error=True).retries(3) == 3
    flagged = SubscribeOptions(pattern="a", handler=print, retry_on_error=True, max_retries=0)
    assert flagged.retries(3) == 0


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"pattern": "photo uploaded"}, InvalidPatternError, "photo uploaded"),
        ({"handler": 42}, ValidationError, "handler must be callable"),
        ({"concurrency": 0}, ValidationError, "concurrency must be an integer >= 1"),
        ({"concurrency": True}, ValidationError, "concurrency must be an integer >= 1"),
        ({"timeout": 0}, ValidationError, "timeout must be a number > 0 or None"),
        ({"max_retries": -1}, ValidationError, "max_retries must be an integer >= 0"),
        ({"filter": {"operator": "nope"}}, InvalidFilterError, "invalid filter"),
        ({"group": "bad group"}, InvalidNameError, "group"),
        ({"group": "g", "group_options": {}}, ValidationError, "must be a GroupOptions"),
        ({"group": "g", "group_options": GroupOptions(start="x")}, ValueError, "start"),
        ({"group_options": GroupOptions()}, ValidationError, "group_options needs group="),
    ],
)
def test_subscribe_options_refuse_bad_arguments_as_the_bus_does(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    """Each bad argument raises the bus's own error type and message."""
    with pytest.raises(error, match=message):
        SubscribeOptions(**{"pattern": "photo.*", "handler": print, **arguments})


def test_from_keywords_refuses_a_keyword_subscribe_does_not_take() -> None:
    """Options given as **options: an unknown keyword is a ValidationError naming it."""
    options = SubscribeOptions.from_keywords("a.*", print, {"group": "g"})
    assert options.group == "g"
    with pytest.raises(ValidationError, match=r"unexpected keyword argument.*'retries'"):
        SubscribeOptions.from_keywords("a.*", print, {"retries": 3})


# -- prepare ------------------------------------------------------------------------------

SENDER = Sender.from_config(
    EventBusConfig(service_name="photo-api", max_event_size=400), publisher="photo-api:h:1:1"
)


def test_prepare_addresses_each_kind_of_publish() -> None:
    """Plain publish, room, user and broadcast get their channel, room and envelope."""
    keys = SENDER.keys
    plain = prepare(SENDER, "photo.uploaded", {"id": 1}, event_id="e1", now_ns=0)
    assert plain[:3] == (keys.event_channel("photo.uploaded"), "photo.uploaded", "e1")
    assert plain[4] is None
    room = prepare(SENDER, "photo.uploaded", room="photo:1")
    assert (room[0], room[4]) == (keys.room_channel("photo:1"), "photo:1")
    user = prepare(SENDER, "photo.uploaded", user="alice")
    assert (user[0], user[4]) == (keys.room_channel("user:alice"), "user:alice")
    broadcast = prepare(SENDER, "photo.uploaded", broadcast=True)
    assert (broadcast[0], broadcast[4]) == (keys.broadcast_channel, None)
    event = decode(seal(user[3], 1), user[0]).event
    assert (event.source, event.user, event.room) == ("photo-api", "alice", "user:alice")
    assert json.loads(seal(plain[3], 1))["ebpub"] == "photo-api:h:1:1"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"event_type": "bad type"}, InvalidNameError),
        ({"room": "bad room"}, InvalidNameError),
        ({"user": "bad user"}, InvalidNameError),
        ({"event_id": "not ok!"}, InvalidNameError),
        ({"data": {1, 2}}, SerializationError),
        ({"headers": {"k": 1}}, SerializationError),
        ({"data": "x" * 400}, EventTooLargeError),
    ],
)
def test_prepare_refuses_bad_input_before_anything_is_sent(
    arguments: dict[str, Any], error: type[Exception]
) -> None:
    """Bad names, data, headers, ids and sizes raise the publish's own errors."""
    with pytest.raises(error):
        prepare(SENDER, **{"event_type": "photo.uploaded", **arguments})
