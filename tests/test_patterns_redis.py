"""Local pattern matching agrees with a real Redis server's ``PSUBSCRIBE``.

For each example a PubSub connection ``PSUBSCRIBE``\\s the pattern (and waits for the
confirmation), then a second connection ``PUBLISH``\\es to the event type: Redis
answers with the number of receivers, 1 exactly when the pattern matches.
"""

from __future__ import annotations

import string
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from eventbus._core.names import validate_event_type
from eventbus._core.patterns import compile_pattern, escape_glob, validate_pattern

from _servers import RedisServer

_TYPE_CHARS = string.ascii_letters + string.digits + "_-"
_FEW_CHARS = "ab_-Z9"  # a small alphabet, so that generated patterns often match
_CONFIRM_TIMEOUT = 5.0


class Case(NamedTuple):
    """One example: Redis sees ``escape_glob(prefix) + pattern`` and ``prefix + text``."""

    pattern: str
    text: str
    prefix: str = ""


class PatternProbe:
    """Asks a real Redis whether a pattern matches a channel."""

    def __init__(self, server: RedisServer) -> None:
        self._publisher = server.client()
        self._pubsub = server.client().pubsub()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._pubsub.close()
        self._publisher.close()

    def matches(self, pattern: str, channel: str) -> bool:
        """PSUBSCRIBE ``pattern``, PUBLISH to ``channel``: did Redis deliver it?"""
        self._pubsub.psubscribe(pattern)
        self._wait_for("psubscribe", pattern)
        receivers = self._publisher.publish(channel, b"x")
        assert receivers in (0, 1), f"another subscriber is listening: {receivers}"
        self._pubsub.punsubscribe(pattern)
        messages = self._wait_for("punsubscribe", pattern)
        delivered = [m for m in messages if m["type"] == "pmessage"]
        assert len(delivered) == receivers, "PUBLISH's count and the delivery disagree"
        return receivers == 1

    def _wait_for(self, kind: str, pattern: str) -> list[dict[str, Any]]:
        """Read messages until the ``kind`` confirmation for ``pattern``; return them all."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + _CONFIRM_TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            seen.append(message)
            if message["type"] == kind and message["channel"] == pattern.encode():
                return seen
        pytest.fail(f"no {kind} confirmation for {pattern!r} within {_CONFIRM_TIMEOUT}s")


@pytest.fixture(scope="module")
def probe(redis_server: RedisServer) -> Iterator[PatternProbe]:
    """A publisher and a PubSub connection to the session's Redis."""
    pattern_probe = PatternProbe(redis_server)
    try:
        yield pattern_probe
    finally:
        pattern_probe.close()


# --- strategies -------------------------------------------------------------------------

_segments = st.one_of(
    st.text(alphabet=_FEW_CHARS, min_size=1, max_size=4),
    st.text(alphabet=_TYPE_CHARS, min_size=1, max_size=8),
)
event_types = st.lists(_segments, min_size=1, max_size=4).map(".".join)

_any_char = st.sampled_from(_TYPE_CHARS + ".")
_few_char = st.sampled_from(_FEW_CHARS + ".")
_chars = st.one_of(_few_char, _any_char)
_escapable = st.sampled_from(_FEW_CHARS + ".*?[]^\\-")


@st.composite
def _class(draw: st.DrawFn, text: str, *, closed: bool = True) -> str:
    """A class: members from the text and the alphabet, ranges (either way), escapes."""
    items = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["from-text", "char", "range", "escape"]))
        if kind == "from-text" and text:
            items.append(draw(st.sampled_from(text)))
        elif kind == "range":
            items.append(f"{draw(_chars)}-{draw(_chars)}")
        elif kind == "escape":
            items.append("\\" + draw(_escapable))
        else:
            items.append(draw(_chars))
    negated = "^" if draw(st.booleans()) else ""
    return f"[{negated}{''.join(items)}{']' if closed else ''}"


@st.composite
def _piece(draw: st.DrawFn, text: str) -> str:
    """One chunk of a mixed pattern."""
    kind = draw(
        st.sampled_from(
            ["slice", "slice", "char", "star", "stars", "any", "class", "escape", "odd"]
        )
    )
    if kind == "slice":
        start = draw(st.integers(0, len(text)))
        return text[start : draw(st.integers(start, len(text)))]
    if kind == "char":
        return draw(_chars)
    if kind == "star":
        return "*"
    if kind == "stars":
        return "**"
    if kind == "any":
        return "?"
    if kind == "class":
        return draw(_class(text))
    if kind == "escape":
        return "\\" + draw(_escapable)
    return draw(st.sampled_from(["[]", "[^]", "]", "^", "-", "[a-]", "[-a]", "[]a]"]))


_ENDINGS = ["", "", "", "[", "[^", "\\", "[a-", "[a", "[\\", "[^a-"]


@st.composite
def mixed_cases(draw: st.DrawFn) -> Case:
    """Literal chunks of the type, stars, ``?``, classes, escapes, odd brackets."""
    text = draw(event_types)
    pieces = draw(st.lists(_piece(text), min_size=1, max_size=6))
    ending = draw(st.sampled_from(_ENDINGS))
    if ending.startswith("[") and draw(st.booleans()):
        ending = draw(_class(text, closed=False))
    return Case("".join(pieces) + ending or "*", text, draw(_prefixes))


@st.composite
def derived_cases(draw: st.DrawFn) -> Case:
    """The type with characters swapped for globs that (mostly) still match them."""
    text = draw(event_types)
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        kind = draw(st.sampled_from(["keep", "keep", "keep", "any", "class", "star", "esc"]))
        if kind == "any":
            out.append("?")
        elif kind == "class":
            lo, hi = sorted((c, draw(_chars)))
            member = draw(st.sampled_from([c, f"{lo}-{hi}", f"{hi}-{lo}", f"\\{c}"]))
            out.append(f"[{draw(st.sampled_from(['', '^']))}{member}]")
        elif kind == "star":
            out.append("*")
            i += draw(st.integers(0, 3))
        elif kind == "esc":
            out.append("\\" + c)
        else:
            out.append(c)
        i += 1
    if draw(st.integers(0, 3)) == 0:  # now and then, break it
        at = draw(st.integers(0, len(out)))
        out.insert(at, draw(st.sampled_from([*_FEW_CHARS, "?", "[]", "."])))
    return Case("".join(out), text, draw(_prefixes))


_prefixes = st.sampled_from(["", "", "eventbus:ev:", "we*ird?[pre]fi\\x:"])


# --- tests --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(case=st.one_of(mixed_cases(), derived_cases()).filter(lambda c: len(c.pattern) <= 255))
@example(case=Case("photo.*", "photo.uploaded"))
@example(case=Case("photo.*", "photo.processing.completed"))
@example(case=Case("*.processing.*", "photo.processing.started"))
@example(case=Case("*.processing.*", "photo.uploaded"))
@example(case=Case("photo.?", "photo.ab"))
@example(case=Case("[z-a]", "m"))
@example(case=Case("[^]", "x"))
@example(case=Case("[]a]", "a"))
@example(case=Case("[a-]", "_"))
@example(case=Case("[a-]", "-"))
@example(case=Case("x[ab", "xb"))
@example(case=Case("a[", "ab"))
@example(case=Case("a[^", "ab"))
@example(case=Case("[\\", "a"))
@example(case=Case("a\\", "a"))
@example(case=Case("a\\.b", "a.b"))
@example(case=Case("*a*a*b", "aaaab"))
@example(case=Case("photo.*", "photo.uploaded", "we*ird?[pre]fi\\x:"))
def test_local_matching_agrees_with_redis_psubscribe(probe: PatternProbe, case: Case) -> None:
    assert validate_event_type(case.text) == case.text
    assert validate_pattern(case.pattern) == case.pattern
    expected = compile_pattern(case.pattern).matches(case.text)
    event("matches" if expected else "does not match")
    actual = probe.matches(escape_glob(case.prefix) + case.pattern, case.prefix + case.text)
    assert expected is actual, f"Redis says {actual} for {case}"


def test_design_patterns_match_in_redis(probe: PatternProbe) -> None:
    """The documented pattern rules (docs/concepts.md, "Patterns") hold on the server
    itself, not only locally."""
    assert probe.matches("photo.*", "photo.uploaded")
    assert probe.matches("photo.*", "photo.processing.completed")
    assert probe.matches("*.processing.*", "photo.processing.started")
    assert not probe.matches("photo.*", "video.uploaded")


def test_probe_sees_no_match_for_an_unrelated_channel(probe: PatternProbe) -> None:
    """The probe itself can say no (so the property test above can fail)."""
    assert not probe.matches("abc", "abd")
    assert probe.matches("abc", "abc")
