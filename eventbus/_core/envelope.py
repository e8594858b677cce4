"""The wire format: one CloudEvents 1.0 JSON envelope per event (``docs/wire-format.md``).

::

    {
        "specversion": "1.0",
        "id": "01J...",
        "source": "photo-api",
        "type": "photo.uploaded",
        "time": "2026-11-28T17:51:09.123456Z",
        "datacontenttype": "application/json",
        "ebpub": "photo-api:web-1:4242:1",
        "ebroom": "photo:123",
        "ebuser": "user-456",
        "ebbroadcast": true,
        "traceparent": "00-...",
        "tracestate": "...",
        "ebheaders": '{"correlation-id":"..."}',
        "data": {...},
        "ebseq": 17,
    }

Extension attributes are lowercase, as CloudEvents requires: ``ebpub`` (publisher
client id) and ``ebseq`` (that publisher's sequence number on this channel) let a
subscriber see loss; ``ebroom``/``ebuser``/``ebbroadcast`` say how the event was
addressed; ``traceparent``/``tracestate`` are the W3C Distributed Tracing extension;
other headers travel in ``ebheaders``, a string holding a JSON object (CloudEvents
attributes may not be maps). Never pickle.

Encoding is on the publish hot path: the fixed attributes are written into a string
template (their values are validated to need no JSON escaping) and only ``data`` and
headers go through :func:`json.dumps`. The sequence number comes last
(:func:`seal`), so that an event refused for its size never takes one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import attrs

from eventbus._errors import DecodeError, SerializationError
from eventbus._models import Event

__all__ = [
    "SEAL_SIZE",
    "Decoded",
    "decode",
    "encode",
    "format_time",
    "new_event_id",
    "seal",
    "timestamp",
]

#: The most bytes :func:`seal` adds to an encoded body.
SEAL_SIZE = 32

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TRACE_HEADERS = ("traceparent", "tracestate")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_UTC = dt.UTC


_id_lock = threading.Lock()
_id_last = [0, 0]  # [milliseconds, random part] of the newest id from this process


def _reset_ids_after_fork() -> None:
    global _id_lock
    _id_lock = threading.Lock()  # a parent thread may have held it at fork time
    _id_last[0] = _id_last[1] = 0  # and the child must not continue the parent's run


os.register_at_fork(after_in_child=_reset_ids_after_fork)
_RANDOM_MAX = (1 << 80) - 1


def new_event_id(now_ns: int | None = None) -> str:
    """A new ULID: 48 bits of milliseconds then 80 random bits, 26 Crockford chars.

    Monotonic within the process: an id made in the same millisecond as the one
    before it takes that one's random part plus one, so ids sort in creation order.
    ``now_ns`` is the wall clock in nanoseconds (read now when None).
    """
    now = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    with _id_lock:
        if now <= _id_last[0] and _id_last[1] < _RANDOM_MAX:
            now, rand = _id_last[0], _id_last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _id_last[0], _id_last[1] = now, rand
    v, p = now << 80 | rand, _PAIRS  # 130 bits (2 leading zeros), 13 pairs of 5-bit chars
    return (
        p[v >> 120]
        + p[(v >> 110) & 1023]
        + p[(v >> 100) & 1023]
        + p[(v >> 90) & 1023]
        + p[(v >> 80) & 1023]
        + p[(v >> 70) & 1023]
        + p[(v >> 60) & 1023]
        + p[(v >> 50) & 1023]
        + p[(v >> 40) & 1023]
        + p[(v >> 30) & 1023]
        + p[(v >> 20) & 1023]
        + p[(v >> 10) & 1023]
        + p[v & 1023]
    )


_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_stamp_cache = (0, "1970-01-01T00:00:00")  # (second, its text): replaced whole, never mutated


def timestamp(now_ns: int) -> str:
    """RFC 3339 UTC text with microseconds for ``now_ns`` (ns since the epoch).

    The date-and-second prefix is cached per second: formatting is on the publish
    hot path, and ``strftime`` costs several microseconds.
    """
    global _stamp_cache
    second, fraction = divmod(now_ns, 1_000_000_000)
    cached = _stamp_cache
    if cached[0] != second:
        cached = _stamp_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{fraction // 1000:06d}Z"


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``."""
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(value: Any, what: str) -> str:
    try:
        return _dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"{what} is not JSON-serialisable: {exc}") from exc


def encode(
    *,
    event_id: str,
    event_type: str,
    source: str,
    moment: dt.datetime | str,
    data: Any,
    publisher: str,
    room: str | None = None,
    user: str | None = None,
    broadcast: bool = False,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Encode one event as UTF-8 JSON bytes, all but the sequence number (:func:`seal`).

    ``event_id``, ``event_type``, ``source``, ``publisher``, ``room`` and ``user`` must
    already be validated (no characters that need JSON escaping). ``moment`` is a
    datetime, or its RFC 3339 text already (see :func:`timestamp`).

    Raises:
        SerializationError: ``data`` or ``headers`` cannot be encoded as JSON.
    """
    parts = [
        '{"specversion":"1.0","id":"',
        event_id,
        '","source":"',
        source,
        '","type":"',
        event_type,
        '","time":"',
        moment if isinstance(moment, str) else format_time(moment),
        '","datacontenttype":"application/json","ebpub":"',
        publisher,
        '"',
    ]
    if room is not None:
        parts += (',"ebroom":"', room, '"')
    if user is not None:
        parts += (',"ebuser":"', user, '"')
    if broadcast:
        parts.append(',"ebbroadcast":true')
    if headers:
        rest = {}
        for key, value in headers.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SerializationError(f"headers must map str to str, got {key!r}: {value!r}")
            if key in _TRACE_HEADERS:
                parts += (',"', key, '":', _json(value, "a header"))
            else:
                rest[key] = value
        if rest:
            parts += (',"ebheaders":', _json(_json(rest, "headers"), "headers"))
    parts += (',"data":', _json(data, "data"))
    try:
        return "".join(parts).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate survives json.dumps(ensure_ascii=False)
        raise SerializationError(f"data or headers are not valid Unicode: {exc}") from exc


def seal(body: bytes, sequence: int) -> bytes:
    """Finish a body from :func:`encode` with the publisher's sequence number."""
    return body + b',"ebseq":%d}' % sequence


@attrs.frozen(kw_only=True)
class Decoded:
    """An event decoded from the wire, with the publisher's loss-detection fields."""

    event: Event
    publisher: str | None
    sequence: int | None


def _require_str(doc: Mapping[str, Any], key: str, channel: str, payload: bytes) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise DecodeError(
            f"envelope attribute {key!r} is missing or not a string",
            kind="envelope",
            channel=channel,
            payload=payload[:200],
        )
    return value


def decode(payload: bytes, channel: str) -> Decoded:
    """Decode one envelope.

    Raises:
        DecodeError: with ``kind`` ``utf8``, ``json``, ``envelope`` or ``specversion``.
    """
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"payload is not UTF-8: {exc}", kind="utf8", channel=channel, payload=payload[:200]
        ) from exc
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DecodeError(
            f"payload is not JSON: {exc}", kind="json", channel=channel, payload=payload[:200]
        ) from exc
    if not isinstance(doc, dict):
        raise DecodeError(
            "envelope is not a JSON object", kind="envelope", channel=channel, payload=payload[:200]
        )
    if doc.get("specversion") != "1.0":
        raise DecodeError(
            f"unsupported specversion {doc.get('specversion')!r}",
            kind="specversion",
            channel=channel,
            payload=payload[:200],
        )
    event_id = _require_str(doc, "id", channel, payload)
    event_type = _require_str(doc, "type", channel, payload)
    source = _require_str(doc, "source", channel, payload)
    raw_time = _require_str(doc, "time", channel, payload)
    try:
        moment = dt.datetime.fromisoformat(raw_time)
    except ValueError as exc:
        raise DecodeError(
            f"envelope time {raw_time!r} is not RFC 3339",
            kind="envelope",
            channel=channel,
            payload=payload[:200],
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    headers: dict[str, str] = {}
    extra = doc.get("ebheaders")
    if isinstance(extra, str):  # our encoding: a JSON object in a string
        try:
            extra = json.loads(extra)
        except (ValueError, RecursionError):
            extra = None
        if not isinstance(extra, dict):
            raise DecodeError(
                "envelope attribute 'ebheaders' is not a JSON object in a string",
                kind="envelope",
                channel=channel,
                payload=payload[:200],
            )
    if isinstance(extra, dict):  # an object is accepted too; other types are ignored
        headers.update((str(k), str(v)) for k, v in extra.items())
    for key in _TRACE_HEADERS:
        if isinstance(doc.get(key), str):
            headers[key] = doc[key]
    room = doc.get("ebroom")
    user = doc.get("ebuser")
    publisher = doc.get("ebpub")
    sequence = doc.get("ebseq")
    event = Event(
        id=event_id,
        type=event_type,
        data=doc.get("data"),
        source=source,
        time=moment,
        room=room if isinstance(room, str) else None,
        user=user if isinstance(user, str) else None,
        broadcast=doc.get("ebbroadcast") is True,
        headers=headers,
    )
    return Decoded(
        event=event,
        publisher=publisher if isinstance(publisher, str) else None,
        sequence=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None,
    )
