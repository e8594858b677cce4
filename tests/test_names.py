"""Naming rules for event types, rooms and user ids (pure tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus._core.names import (
    MAX_EVENT_TYPE_LENGTH,
    MAX_ROOM_LENGTH,
    MAX_USER_ID_LENGTH,
    user_room,
    validate_event_type,
    validate_room,
    validate_user_id,
)
from eventbus._errors import InvalidNameError, ValidationError

_SEGMENT_CHARS = "abcXYZ019_-"


# --- event types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "photo.uploaded",
        "photo.processing.completed",
        "a",
        "A-Z_09",
        "system.maintenance",
        "x-1.y_2.Z",
        "_",
        "-",
        "a" * MAX_EVENT_TYPE_LENGTH,
    ],
)
def test_valid_event_type_is_returned(name: str) -> None:
    assert validate_event_type(name) == name


@pytest.mark.parametrize(
    "name",
    [
        ".photo",
        "photo.",
        "photo..uploaded",
        ".",
        "photo uploaded",
        "photo.*",
        "photo.?",
        "photo.[a]",
        "photo:uploaded",
        "photo/uploaded",
        "{photo}.uploaded",
        "caf\u00e9",
        "photo.uploaded\n",
        "\u0661",  # a non-ASCII digit
    ],
)
def test_malformed_event_type_is_rejected_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError, match=r"invalid event type .*: must be segments") as info:
        validate_event_type(name)
    assert repr(name) in str(info.value)


def test_empty_event_type_is_rejected() -> None:
    with pytest.raises(InvalidNameError, match="invalid event type '': must not be empty"):
        validate_event_type("")


def test_event_type_over_255_characters_is_rejected() -> None:
    with pytest.raises(InvalidNameError, match="256 characters long, at most 255"):
        validate_event_type("a" * 256)


@pytest.mark.parametrize("value", [None, 1, b"photo.uploaded", ["photo.uploaded"]])
def test_non_str_event_type_is_rejected(value: object) -> None:
    with pytest.raises(InvalidNameError, match=r"invalid event type .*must be a str, not"):
        validate_event_type(value)


@given(st.lists(st.text(_SEGMENT_CHARS, min_size=1, max_size=10), min_size=1, max_size=8))
def test_dot_joined_segments_are_event_types(segments: list[str]) -> None:
    name = ".".join(segments)
    assert validate_event_type(name) == name


# --- rooms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "photo:123",
        "user:alice@example.com",
        "team/eng",
        "org.acme/team-1:chat",
        "a+b=c",
        "lobby",
        "user:user-456",
        "a" * MAX_ROOM_LENGTH,
    ],
)
def test_valid_room_is_returned(name: str) -> None:
    assert validate_room(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "photo:",
        ":photo",
        "photo::123",
        "photo:/123",
        "team/",
        "photo 123",
        "{photo}:123",
        "photo:*",
        "photo:?",
        "photo:[1]",
        "photo\\123",
        "photo#1",
        "photo,1",
        "caf\u00e9",
    ],
)
def test_malformed_room_is_rejected_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError, match=r"invalid room .*: must be segments .* / @ \+ =$"):
        validate_room(name)


def test_empty_room_is_rejected() -> None:
    with pytest.raises(InvalidNameError, match="invalid room '': must not be empty"):
        validate_room("")


def test_room_over_255_characters_is_rejected() -> None:
    with pytest.raises(InvalidNameError, match="256 characters long, at most 255"):
        validate_room("a" * 256)


@pytest.mark.parametrize("value", [None, 123, b"photo:1"])
def test_non_str_room_is_rejected(value: object) -> None:
    with pytest.raises(InvalidNameError, match=r"invalid room .*must be a str"):
        validate_room(value)


# --- user ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["user-456", "alice@example.com", "auth0:abc123", "alice+tag@example.com", "42"],
)
def test_valid_user_id_is_returned(name: str) -> None:
    assert validate_user_id(name) == name


@pytest.mark.parametrize(
    "name",
    ["team/eng", "a=b", "alice@", "@alice", "a..b", "alice smith", "al*ce", "{alice}"],
)
def test_malformed_user_id_is_rejected_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidNameError, match=r"invalid user id .*: must be segments .* : @ \+$"):
        validate_user_id(name)


def test_user_id_limit_is_200_characters() -> None:
    assert validate_user_id("u" * MAX_USER_ID_LENGTH)
    with pytest.raises(InvalidNameError, match="201 characters long, at most 200"):
        validate_user_id("u" * 201)


def test_empty_and_non_str_user_ids_are_rejected() -> None:
    with pytest.raises(InvalidNameError, match="must not be empty"):
        validate_user_id("")
    with pytest.raises(InvalidNameError, match="must be a str, not int"):
        validate_user_id(456)


# --- user rooms ---------------------------------------------------------------------------


def test_user_room_prefixes_the_id() -> None:
    assert user_room("user-456") == "user:user-456"
    assert user_room("alice@example.com") == "user:alice@example.com"


def test_user_room_validates_the_id() -> None:
    with pytest.raises(InvalidNameError, match="invalid user id"):
        user_room("team/eng")


def test_longest_user_id_gives_a_valid_room() -> None:
    longest = "u" * MAX_USER_ID_LENGTH
    assert validate_room(user_room(longest)) == f"user:{longest}"


@given(
    st.lists(st.text(_SEGMENT_CHARS, min_size=1, max_size=8), min_size=1, max_size=5),
    st.lists(st.sampled_from(".:@+"), min_size=4, max_size=4),
)
def test_every_user_room_is_a_valid_room(segments: list[str], separators: list[str]) -> None:
    user_id = segments[0] + "".join(
        s + seg for s, seg in zip(separators, segments[1:], strict=False)
    )
    assert validate_room(user_room(user_id)) == f"user:{user_id}"


# --- errors -------------------------------------------------------------------------------


def test_invalid_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid event type") as info:
        validate_event_type("bad type")
    assert isinstance(info.value, ValidationError)


def test_long_bad_value_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_room("x" * 100 + " y")
    assert len(str(info.value)) < 200
    assert "..." in str(info.value)
