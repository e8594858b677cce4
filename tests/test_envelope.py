"""The wire format: CloudEvents 1.0 JSON envelopes, decode errors, event ids (pure)."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import DecodeError, Event, SerializationError
from eventbus._core.envelope import (
    SEAL_SIZE,
    decode,
    encode,
    format_time,
    new_event_id,
    seal,
    timestamp,
)

CHANNEL = "eventbus:ev:photo.uploaded"
MOMENT = dt.datetime(2026, 11, 28, 17, 51, 9, 123456, tzinfo=dt.UTC)
CROCKFORD = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
# CloudEvents 1.0: the context attributes a structured-mode JSON event may carry.
CE_REQUIRED = {"specversion", "id", "source", "type"}
CE_OPTIONAL = {"datacontenttype", "dataschema", "subject", "time"}


def _encode(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "event_id": "01JDQ7Z8X5N6M4K3J2H1G0F9E8",
        "event_type": "photo.uploaded",
        "source": "photo-api",
        "moment": MOMENT,
        "data": {"photoId": "123"},
        "publisher": "photo-api:web-1:4242:1",
    }
    fields.update(overrides)
    return encode(**fields)


def _full_envelope() -> bytes:
    return seal(
        _encode(
            room="photo:123",
            user="user-456",
            broadcast=True,
            headers={
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "tracestate": "congo=t61rcWkgMzE",
                "correlation-id": "req-77",
            },
        ),
        17,
    )


# -- round trip -------------------------------------------------------------------------


def test_round_trip_keeps_every_field() -> None:
    """encode + seal then decode gives back id, type, source, time, data, room, user..."""
    decoded = decode(_full_envelope(), CHANNEL)
    assert decoded.event == Event(
        id="01JDQ7Z8X5N6M4K3J2H1G0F9E8",
        type="photo.uploaded",
        data={"photoId": "123"},
        source="photo-api",
        time=MOMENT,
        room="photo:123",
        user="user-456",
        broadcast=True,
        headers={
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "congo=t61rcWkgMzE",
            "correlation-id": "req-77",
        },
    )
    assert decoded.publisher == "photo-api:web-1:4242:1"
    assert decoded.sequence == 17


def test_round_trip_of_a_plain_publish_has_no_addressing() -> None:
    """Without room, user, broadcast or headers they decode as None, None, False, {}."""
    event = decode(seal(_encode(data=None), 1), CHANNEL).event
    assert (event.room, event.user, event.broadcast, dict(event.headers)) == (
        None,
        None,
        False,
        {},
    )
    assert event.data is None
    assert event.delivery_attempt == 1
    assert event.group is None


def test_time_keeps_microseconds_and_is_aware_utc() -> None:
    """A non-UTC aware time comes back as the same instant, in UTC, to the microsecond."""
    plus_two = dt.timezone(dt.timedelta(hours=2))
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, 999_999, tzinfo=plus_two)
    event = decode(seal(_encode(moment=moment), 1), CHANNEL).event
    assert event.time == moment
    assert event.time.utcoffset() == dt.timedelta(0)
    assert event.time.microsecond == 999_999
    assert format_time(moment) == "2030-01-02T01:04:05.999999Z"


def test_sequence_numbers_round_trip_large_values() -> None:
    """seal() adds at most SEAL_SIZE bytes, and big sequence numbers survive."""
    body = _encode()
    for sequence in (0, 1, 2**31, 2**53):
        sealed = seal(body, sequence)
        assert len(sealed) - len(body) <= SEAL_SIZE
        assert decode(sealed, CHANNEL).sequence == sequence


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


@given(
    data=_json_values,
    headers=st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=30), max_size=4),
)
def test_round_trip_of_any_json_data_and_headers(data: Any, headers: dict[str, str]) -> None:
    """Any JSON value (unicode, nesting, big ints, floats) and any str headers round-trip."""
    event = decode(seal(_encode(data=data, headers=headers), 5), CHANNEL).event
    assert event.data == data
    assert json.dumps(event.data, sort_keys=True) == json.dumps(data, sort_keys=True)
    assert dict(event.headers) == headers


@pytest.mark.parametrize(
    "data",
    [
        "h\u00e9llo w\u00f6rld \u2603 \U0001f4f8 \u4e2d\u6587",
        {"emoji": "\U0001f600", "rtl": "\u05e9\u05dc\u05d5\u05dd", "nul": "\x00", "quote": '"\\'},
        [1, -2.5, True, None, "x", [], {}],
        0,
        -0.0,
        1e308,
        10**30,
        "",
    ],
    ids=["unicode", "escapes", "mixed-list", "zero", "neg-zero", "huge-float", "bigint", "empty"],
)
def test_round_trip_of_data_shapes(data: Any) -> None:
    """Unicode, control characters, quotes and numeric edge cases survive the wire."""
    assert decode(seal(_encode(data=data), 1), CHANNEL).event.data == data


def test_unicode_is_sent_as_utf8_not_escaped() -> None:
    """Non-ASCII data is UTF-8 on the wire (ensure_ascii off), not \\u escapes."""
    payload = seal(_encode(data="\u2603"), 1)
    assert "\u2603".encode() in payload


# -- CloudEvents conformance ------------------------------------------------------------


def test_envelope_is_cloudevents_structured_json() -> None:
    """The output is one UTF-8 JSON object with the CloudEvents 1.0 attributes."""
    doc = json.loads(_full_envelope().decode("utf-8"))
    assert isinstance(doc, dict)
    assert doc["specversion"] == "1.0"
    assert set(doc) >= CE_REQUIRED
    assert doc["datacontenttype"] == "application/json"
    assert doc["time"] == "2026-11-28T17:51:09.123456Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", doc["time"])
    for name in ("id", "source", "type"):
        assert isinstance(doc[name], str)
        assert doc[name]
    assert doc["data"] == {"photoId": "123"}
    assert doc["traceparent"] == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert doc["tracestate"] == "congo=t61rcWkgMzE"


def test_extension_attribute_names_are_lowercase_alphanumeric() -> None:
    """Every non-core attribute name is [a-z0-9], at most 20 characters (CloudEvents 1.0)."""
    doc = json.loads(_full_envelope())
    extensions = set(doc) - CE_REQUIRED - CE_OPTIONAL - {"data", "data_base64"}
    assert extensions  # room, user, publisher, sequence, trace context...
    for name in extensions:
        assert re.fullmatch(r"[a-z0-9]{1,20}", name), name


def test_extension_attribute_values_use_cloudevents_types() -> None:
    """Every extension attribute value is a string, boolean or integer (no JSON objects)."""
    doc = json.loads(_full_envelope())
    extensions = set(doc) - CE_REQUIRED - CE_OPTIONAL - {"data", "data_base64"}
    for name in extensions:
        assert isinstance(doc[name], str | bool | int), (name, doc[name])


# -- decode errors ----------------------------------------------------------------------


_MISSING = object()


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_full_envelope())
    for key, value in changes.items():
        if value is _MISSING:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"\xff\xfe not utf-8", "utf8"),
        (b"caf\xe9", "utf8"),
        (b"", "json"),
        (b"{not json", "json"),
        (b'{"specversion": "1.0",', "json"),
        (b"[1, 2, 3]", "envelope"),
        (b'"a string"', "envelope"),
        (b"42", "envelope"),
        (b"null", "envelope"),
        (json.dumps(_doc(specversion="0.3")).encode(), "specversion"),
        (json.dumps(_doc(specversion=1.0)).encode(), "specversion"),
        (json.dumps(_doc(specversion=_MISSING)).encode(), "specversion"),
        (json.dumps(_doc(id=_MISSING)).encode(), "envelope"),
        (json.dumps(_doc(id=17)).encode(), "envelope"),
        (json.dumps(_doc(id="")).encode(), "envelope"),
        (json.dumps(_doc(type=_MISSING)).encode(), "envelope"),
        (json.dumps(_doc(type=["photo"])).encode(), "envelope"),
        (json.dumps(_doc(source=_MISSING)).encode(), "envelope"),
        (json.dumps(_doc(source=None)).encode(), "envelope"),
        (json.dumps(_doc(time=_MISSING)).encode(), "envelope"),
        (json.dumps(_doc(time=1700000000)).encode(), "envelope"),
        (json.dumps(_doc(time="yesterday")).encode(), "envelope"),
    ],
    ids=[
        "bad-utf8",
        "latin1",
        "empty",
        "not-json",
        "truncated-json",
        "array",
        "string",
        "number",
        "null",
        "specversion-0.3",
        "specversion-number",
        "specversion-missing",
        "id-missing",
        "id-int",
        "id-empty",
        "type-missing",
        "type-list",
        "source-missing",
        "source-null",
        "time-missing",
        "time-int",
        "time-not-rfc3339",
    ],
)
def test_decode_errors_say_what_kind(payload: bytes, kind: str) -> None:
    """Each kind of bad payload raises DecodeError with its kind, channel and payload."""
    with pytest.raises(DecodeError) as info:
        decode(payload, CHANNEL)
    error = info.value
    assert error.kind == kind
    assert error.channel == CHANNEL
    assert error.payload == payload[:200]


def test_decode_error_payload_is_truncated() -> None:
    """A huge bad payload is kept only in part (its first 200 bytes) on the error."""
    payload = b"x" * 100_000
    with pytest.raises(DecodeError) as info:
        decode(payload, CHANNEL)
    assert info.value.payload == payload[:200]


def test_deeply_nested_json_is_a_json_decode_error() -> None:
    """A payload nested 100,000 deep is a DecodeError of kind json, not a RecursionError."""
    with pytest.raises(DecodeError) as info:
        decode(b"[" * 100_000 + b"]" * 100_000, CHANNEL)
    assert info.value.kind == "json"


def test_decode_tolerates_wrong_typed_optional_attributes() -> None:
    """Wrong-typed room/user/publisher/sequence/headers are ignored, not fatal."""
    payload = json.dumps(
        _doc(ebroom=5, ebuser=[], ebpub=None, ebseq=True, ebheaders=7, ebbroadcast="yes")
    ).encode()
    decoded = decode(payload, CHANNEL)
    assert decoded.event.room is None
    assert decoded.event.user is None
    assert decoded.event.broadcast is False
    assert decoded.publisher is None
    assert decoded.sequence is None
    assert "correlation-id" not in decoded.event.headers


def test_other_headers_travel_as_a_json_string() -> None:
    """Non-trace headers are one string attribute holding a JSON object (CloudEvents has no maps)."""
    doc = json.loads(_full_envelope())
    assert json.loads(doc["ebheaders"]) == {"correlation-id": "req-77"}
    assert "traceparent" not in json.loads(doc["ebheaders"])


def test_ebheaders_that_is_not_json_is_an_envelope_error() -> None:
    """An ebheaders string that is not JSON is a DecodeError of kind envelope."""
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(_doc(ebheaders="{not json")).encode(), CHANNEL)
    assert info.value.kind == "envelope"


# -- encode errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [object(), {1, 2}, b"bytes", float("nan"), float("inf"), -float("inf"), {"k": [float("nan")]}],
    ids=["object", "set", "bytes", "nan", "inf", "-inf", "nested-nan"],
)
def test_non_json_data_raises_serialization_error(data: Any) -> None:
    """Data that is not strict JSON (objects, sets, bytes, NaN, infinities) is refused."""
    with pytest.raises(SerializationError):
        _encode(data=data)


def test_circular_data_raises_serialization_error() -> None:
    """A list that contains itself is a SerializationError, not a crash."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        _encode(data=loop)


@pytest.mark.parametrize(
    "headers",
    [{"n": 1}, {1: "v"}, {"traceparent": None}, {"tracestate": 5}, {"b": b"v"}],
    ids=["int-value", "int-key", "traceparent-none", "tracestate-int", "bytes-value"],
)
def test_non_str_headers_raise_serialization_error(headers: dict[Any, Any]) -> None:
    """Headers must map str to str."""
    with pytest.raises(SerializationError):
        _encode(headers=headers)


@pytest.mark.parametrize(
    "overrides",
    [{"data": "\ud800"}, {"headers": {"x-note": "\udc80"}}],
    ids=["data", "header"],
)
def test_lone_surrogates_raise_serialization_error(overrides: dict[str, Any]) -> None:
    """A str with a lone surrogate cannot be UTF-8: SerializationError, not UnicodeEncodeError."""
    with pytest.raises(SerializationError):
        _encode(**overrides)


# -- event ids --------------------------------------------------------------------------


def test_event_id_is_a_ulid_near_now() -> None:
    """An id is 26 Crockford base32 characters whose time part is the current millisecond."""
    before = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    event_id = new_event_id()
    after = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    assert CROCKFORD.fullmatch(event_id), event_id
    millis = 0
    for char in event_id[:10]:
        millis = millis * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert before - 1 <= millis <= after + 1


def test_event_ids_are_unique_and_sorted_in_a_tight_loop() -> None:
    """10,000 ids made back to back are distinct and already in sorted order."""
    ids = [new_event_id() for _ in range(10_000)]
    assert all(CROCKFORD.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_event_ids_are_unique_across_threads() -> None:
    """Ids made on 8 threads at once are all distinct, and each thread's are sorted."""
    per_thread: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(per_thread))

    def make(out: list[str]) -> None:
        start.wait(timeout=10)
        out.extend(new_event_id() for _ in range(2_500))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    everything = [i for out in per_thread for i in out]
    assert len(everything) == 20_000
    assert len(set(everything)) == len(everything)
    for out in per_thread:
        assert out == sorted(out)


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_timestamp_is_rfc3339_utc_to_the_microsecond(now_ns: int) -> None:
    """timestamp(ns) is the same instant as datetime, truncated to microseconds, ending in Z."""
    text = timestamp(now_ns)
    assert text.endswith("Z")
    parsed = dt.datetime.fromisoformat(text)
    seconds, nanos = divmod(now_ns, 10**9)
    expected = dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=nanos // 1000)
    assert parsed == expected
