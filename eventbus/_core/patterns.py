"""Subscription patterns: glob matching that agrees with Redis ``PSUBSCRIBE``.

Redis matches channels against patterns with ``stringmatchlen`` (``src/util.c``),
case-sensitively. This module reproduces it exactly, so that local matching (the
memory transport, group routing, the testing bus) delivers what Redis would:

- ``*`` matches any run of characters, **including dots** (``photo.*`` matches
  ``photo.processing.completed``); a run of stars is one star.
- ``?`` matches exactly one character.
- ``[abc]`` one of the listed characters, ``[^abc]`` any other one, ``[a-z]`` a range;
  a reversed range ``[z-a]`` is the same as ``[a-z]``; ``\\x`` inside a class is the
  literal ``x``; ``^`` counts as negation only right after ``[``.
- ``\\x`` outside a class is the literal ``x``.

and the edge cases, as Redis 7 does them:

- ``]`` closes a class even right after ``[`` or ``[^``: ``[]`` matches nothing and
  ``[^]`` matches any one character (there is no POSIX ``[]a]``).
- In a class, ``x-y`` is a range whenever two more characters follow ``x``, even if
  the second of them is ``]`` (``[a-]`` is the range ``]``..``a``, left open).
- A class left open (``[abc`` or ``[a-]``) runs to the end of the pattern, and still
  matches one character; a ``[`` or ``[^`` that ends the pattern matches nothing or,
  respectively, any one character.
- A ``\\`` that ends the pattern (or an open class) is a literal backslash.
- An empty text matches only the empty pattern (``*`` does not match ``""``).

Texts are event types (ASCII); Redis compares bytes, this module compares characters,
which is the same thing for ASCII.

Matching is fast on the paths that matter: a literal pattern is a string comparison,
``prefix*`` is ``str.startswith``, and anything else is translated once into a
compiled regular expression whose star runs cannot backtrack exponentially.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import attrs

from eventbus._errors import InvalidPatternError

__all__ = [
    "MAX_PATTERN_LENGTH",
    "Pattern",
    "compile_glob",
    "compile_pattern",
    "escape_glob",
    "validate_pattern",
]

MAX_PATTERN_LENGTH = 255
"""The longest pattern :func:`validate_pattern` accepts, in characters."""

_PATTERN_CHARS_RE = re.compile(r"[A-Za-z0-9_\-.*?\[\]^\\]+")
_BAD_CHAR_RE = re.compile(r"[^A-Za-z0-9_\-.*?\[\]^\\]")
_GLOB_CHARS = frozenset("*?[\\")
_ESCAPE_RE = re.compile(r"([*?\[\]\\])")

_STAR = None
"""Token for a run of ``*`` in :func:`_tokenize`; every other token is a regex fragment."""


@attrs.frozen
class Pattern:
    """A compiled subscription pattern; build it with :func:`compile_pattern`.

    Attributes:
        source: the pattern as given.
        is_literal: True when the pattern has no glob characters (``* ? [ \\``), so it
            matches exactly the text equal to ``source``.

    Example::

        >>> p = compile_pattern("photo.*")
        >>> p.matches("photo.processing.completed"), p.matches("video.uploaded")
        (True, False)
    """

    source: str
    is_literal: bool
    _match: Callable[[str], bool] = attrs.field(eq=False, repr=False)

    def matches(self, text: str) -> bool:
        """Tell whether ``text`` (an event type) matches, exactly as Redis would.

        Args:
            text: the event type (or any ASCII channel suffix) to test.
        """
        return self._match(text)


def validate_pattern(pattern: object) -> str:
    """Check that ``pattern`` is an acceptable subscription pattern and return it.

    A pattern is 1 to 255 characters from ``A-Z a-z 0-9 _ - .`` (the characters of
    event types) and the glob characters ``* ? [ ] ^ \\``.

    Args:
        pattern: the pattern to check.

    Raises:
        InvalidPatternError: the pattern is not a string, is empty, is longer than 255
            characters, or contains another character.
    """
    if (
        isinstance(pattern, str)
        and len(pattern) <= MAX_PATTERN_LENGTH
        and _PATTERN_CHARS_RE.fullmatch(pattern)
    ):
        return pattern
    raise InvalidPatternError(_describe_problem(pattern))


def compile_pattern(pattern: str) -> Pattern:
    """Validate ``pattern`` and compile it into a :class:`Pattern`; results are cached.

    Args:
        pattern: a glob pattern, as for Redis ``PSUBSCRIBE`` (see the module docs).

    Raises:
        InvalidPatternError: the pattern fails :func:`validate_pattern`.
    """
    return _compile(validate_pattern(pattern))


def compile_glob(glob: str) -> Pattern:
    """Compile any glob, such as a full channel pattern with its prefix; no validation.

    The transports use it for channel patterns (``eventbus:ev:photo.*``), whose
    prefix may hold characters that subscription patterns may not. Results are cached
    together with :func:`compile_pattern`'s.

    Args:
        glob: any glob (it may be empty: it then matches only the empty text).
    """
    return _compile(glob)


def escape_glob(text: str) -> str:
    """Backslash-escape ``* ? [ ] \\`` so that Redis matches ``text`` literally.

    Use it to put a fixed prefix (such as the key prefix) in front of a pattern for
    ``PSUBSCRIBE``: ``escape_glob("app:ev:") + "photo.*"``.

    Args:
        text: the literal text.
    """
    return _ESCAPE_RE.sub(r"\\\1", text)


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> Pattern:
    """Build the :class:`Pattern` for a validated ``pattern`` (cached)."""
    if _GLOB_CHARS.isdisjoint(pattern):
        return Pattern(source=pattern, is_literal=True, match=pattern.__eq__)
    prefix = pattern.rstrip("*")
    if _GLOB_CHARS.isdisjoint(prefix):
        # "prefix*": Redis never matches the empty text, even with a lone "*".
        match = _prefix_matcher(prefix) if prefix else _is_nonempty
        return Pattern(source=pattern, is_literal=False, match=match)
    regex = re.compile(_translate(pattern), re.DOTALL)
    return Pattern(source=pattern, is_literal=False, match=_regex_matcher(regex))


def _translate(pattern: str) -> str:
    """Translate a glob pattern into a regular expression for ``re.fullmatch``.

    The result must be compiled with ``re.DOTALL``. A star run between two fixed
    parts becomes an atomic lazy group: placing each middle part at its leftmost
    occurrence is always right for globs, and it keeps a pattern with many stars from
    backtracking exponentially.

    Args:
        pattern: the glob pattern (any string; it is not validated here).
    """
    segments: list[list[str]] = [[]]
    for token in _tokenize(pattern):
        if token is _STAR:
            segments.append([])
        else:
            segments[-1].append(token)
    head = "".join(segments[0])
    if len(segments) == 1:
        return head
    middle = "".join(f"(?>.*?{''.join(seg)})" for seg in segments[1:-1])
    return f"{head}{middle}.*{''.join(segments[-1])}"


def _tokenize(pattern: str) -> list[str | None]:
    """Split a glob into :data:`_STAR` (a run of stars) and one-character regex fragments.

    This walks the pattern the way ``stringmatchlen`` does, including how it treats a
    class left open and a trailing backslash.
    """
    tokens: list[str | None] = []
    n = len(pattern)
    i = 0
    while i < n:
        c = pattern[i]
        if c == "*":
            if not tokens or tokens[-1] is not _STAR:
                tokens.append(_STAR)
            i += 1
        elif c == "?":
            tokens.append(".")
            i += 1
        elif c == "\\" and i + 1 < n:
            tokens.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            fragment, i = _parse_class(pattern, i + 1)
            tokens.append(fragment)
        else:
            # Includes a trailing backslash, which Redis compares literally.
            tokens.append(re.escape(c))
            i += 1
    return tokens


def _parse_class(pattern: str, i: int) -> tuple[str, int]:
    """Parse a class whose body starts at ``pattern[i]``; return its regex and the next index."""
    n = len(pattern)
    negated = i < n and pattern[i] == "^"
    if negated:
        i += 1
    items: list[str] = []
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            items.append(_class_char(pattern[i + 1]))
            i += 2
        elif c == "]":
            i += 1
            break
        elif i + 2 < n and pattern[i + 1] == "-":
            # Redis takes the character after "-" as the end even if it is "]" or "\\",
            # and swaps the ends of a reversed range.
            lo, hi = sorted((c, pattern[i + 2]))
            items.append(f"{_class_char(lo)}-{_class_char(hi)}")
            i += 3
        else:
            items.append(_class_char(c))
            i += 1
    if not items:
        return ("." if negated else "(?!)"), i
    return f"[{'^' if negated else ''}{''.join(items)}]", i


def _class_char(c: str) -> str:
    """Spell one character for use inside a regex class, with no special meaning."""
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\U{code:08x}"


def _is_nonempty(text: str) -> bool:
    """Match any text but the empty one (the pattern ``*``)."""
    return text != ""


def _prefix_matcher(prefix: str) -> Callable[[str], bool]:
    """Match the texts that start with ``prefix`` (the pattern ``prefix*``)."""

    def match(text: str) -> bool:
        return text.startswith(prefix)

    return match


def _regex_matcher(regex: re.Pattern[str]) -> Callable[[str], bool]:
    """Wrap a compiled translation into a ``text -> bool`` function."""
    fullmatch = regex.fullmatch

    def match(text: str) -> bool:
        return fullmatch(text) is not None

    return match


def _describe_problem(pattern: object) -> str:
    """Say what is wrong with a pattern that :func:`validate_pattern` rejected."""
    if not isinstance(pattern, str):
        return f"invalid pattern {pattern!r}: must be a str, not {type(pattern).__name__}"
    if not pattern:
        return "invalid pattern '': must not be empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return (
            f"invalid pattern {_show(pattern)}: {len(pattern)} characters long, "
            f"at most {MAX_PATTERN_LENGTH} are allowed"
        )
    bad = _BAD_CHAR_RE.search(pattern)
    assert bad is not None
    return (
        f"invalid pattern {_show(pattern)}: character {bad.group()!r} at index {bad.start()} "
        "is not allowed (use A-Z a-z 0-9 _ - . and the glob characters * ? [ ] ^ \\)"
    )


def _show(value: str) -> str:
    """Quote a bad value for an error message, shortened if it is long."""
    return repr(value) if len(value) <= 60 else f"{value[:57]!r}..."
