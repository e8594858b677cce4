"""Glob patterns: Redis ``stringmatchlen`` semantics, validation, escaping (pure tests).

``_redis_stringmatchlen`` below is a line-by-line port of Redis 7's C function
(``src/util.c``, case-sensitive as ``PSUBSCRIBE`` uses it), kept as an oracle;
``test_patterns_redis.py`` checks both against a real server.
"""

from __future__ import annotations

import itertools
import string

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus._core.patterns import (
    MAX_PATTERN_LENGTH,
    Pattern,
    compile_glob,
    compile_pattern,
    escape_glob,
    validate_pattern,
)
from eventbus._errors import InvalidPatternError, ValidationError


def _redis_stringmatchlen(pattern: str, text: str) -> bool:
    """Port of Redis 7 ``stringmatchlen_impl`` (nocase=0), NUL terminators included."""
    pat = pattern + "\0"
    txt = text + "\0"
    skip_longer = False

    def impl(p: int, plen: int, s: int, slen: int, nesting: int) -> bool:
        nonlocal skip_longer
        if nesting > 1000:
            return False
        while plen and slen:
            c = pat[p]
            if c == "*":
                while plen and pat[p + 1] == "*":
                    p += 1
                    plen -= 1
                if plen == 1:
                    return True
                while slen:
                    if impl(p + 1, plen - 1, s, slen, nesting + 1):
                        return True
                    if skip_longer:
                        return False
                    s += 1
                    slen -= 1
                skip_longer = True
                return False
            if c == "?":
                s += 1
                slen -= 1
            elif c == "[":
                p += 1
                plen -= 1
                negated = pat[p] == "^"
                if negated:
                    p += 1
                    plen -= 1
                match = False
                while True:
                    if pat[p] == "\\" and plen >= 2:
                        p += 1
                        plen -= 1
                        match = match or pat[p] == txt[s]
                    elif pat[p] == "]":
                        break
                    elif plen == 0:
                        p -= 1
                        plen += 1
                        break
                    elif plen >= 3 and pat[p + 1] == "-":
                        lo, hi = sorted((ord(pat[p]), ord(pat[p + 2])))
                        p += 2
                        plen -= 2
                        match = match or lo <= ord(txt[s]) <= hi
                    else:
                        match = match or pat[p] == txt[s]
                    p += 1
                    plen -= 1
                if negated:
                    match = not match
                if not match:
                    return False
                s += 1
                slen -= 1
            else:
                if c == "\\" and plen >= 2:
                    p += 1
                    plen -= 1
                if pat[p] != txt[s]:
                    return False
                s += 1
                slen -= 1
            p += 1
            plen -= 1
            if slen == 0:
                while pat[p] == "*":
                    p += 1
                    plen -= 1
                break
        return plen == 0 and slen == 0

    return impl(0, len(pattern), 0, len(text), 0)


def _matches(pattern: str, text: str) -> bool:
    result = compile_pattern(pattern).matches(text)
    assert result is _redis_stringmatchlen(pattern, text), "the oracle disagrees"
    return result


# --- the cases docs/concepts.md promises ---------------------------------------------


@pytest.mark.parametrize("text", ["photo.uploaded", "photo.processing.completed", "photo.x"])
def test_prefix_star_matches_across_dots(text: str) -> None:
    assert _matches("photo.*", text)


@pytest.mark.parametrize("text", ["photo", "photos.uploaded", "video.uploaded", "xphoto.a"])
def test_prefix_star_rejects_other_prefixes(text: str) -> None:
    assert not _matches("photo.*", text)


def test_star_in_the_middle_and_at_both_ends_matches_any_run() -> None:
    assert _matches("*.processing.*", "photo.processing.started")
    assert _matches("*.processing.*", "a.b.processing.c.d")
    assert not _matches("*.processing.*", "photo.processing")
    assert not _matches("*.processing.*", "processing.started")


# --- star and question mark -------------------------------------------------------------


def test_star_run_is_one_star() -> None:
    for text in ["a", "ab", "a.b.c"]:
        assert _matches("***", text)
        assert _matches("a**", text)
    assert _matches("a**b", "ab")
    assert _matches("a**b", "a.x.b")


def test_star_does_not_match_the_empty_text_like_redis_7() -> None:
    assert not _matches("*", "")
    assert not _matches("**", "")
    assert _matches("*", "x")


def test_trailing_star_matches_the_empty_rest() -> None:
    assert _matches("abc*", "abc")
    assert _matches("a*b*", "ab")


def test_question_mark_matches_exactly_one_character() -> None:
    assert _matches("photo.?", "photo.a")
    assert _matches("?", ".")
    assert not _matches("photo.?", "photo.")
    assert not _matches("photo.?", "photo.ab")
    assert not _matches("?", "")


def test_suffix_after_star_is_anchored_at_the_end() -> None:
    assert _matches("*.completed", "photo.processing.completed")
    assert not _matches("*.completed", "photo.completed.x")


def test_stars_place_middle_parts_at_any_occurrence() -> None:
    assert _matches("*a?c*", "xxabcyy")
    assert _matches("*ab*ab", "abab")
    assert _matches("*ab*ab", "ab-ab-ab")
    assert not _matches("*ab*ab", "aba")
    assert _matches("a*b?d*e", "a-b-bxd-e")


@pytest.mark.timeout(10)
def test_many_stars_do_not_backtrack_exponentially() -> None:
    """A pattern with 100 stars against 255 characters answers (no timeout)."""
    pattern = "*a" * 100 + "*b"
    assert not compile_pattern(pattern).matches("a" * 255)
    assert compile_pattern(pattern).matches("a" * 254 + "b")


# --- classes ----------------------------------------------------------------------------


def test_class_matches_one_listed_character() -> None:
    assert _matches("[abc]", "b")
    assert not _matches("[abc]", "d")
    assert not _matches("[abc]", "ab")
    assert _matches("v[12].x", "v2.x")


def test_negated_class_matches_one_unlisted_character() -> None:
    assert _matches("[^abc]", "d")
    assert _matches("[^abc]", ".")
    assert not _matches("[^abc]", "a")
    assert not _matches("[^abc]", "de")


def test_range_and_reversed_range_match_alike() -> None:
    for pattern in ["[a-z]", "[z-a]"]:
        assert _matches(pattern, "a")
        assert _matches(pattern, "m")
        assert _matches(pattern, "z")
        assert not _matches(pattern, "A")
    assert _matches("[^0-9]", "x")
    assert not _matches("[^9-0]", "5")


def test_class_mixes_ranges_and_characters() -> None:
    assert _matches("[a-cx_0-2]", "x")
    assert _matches("[a-cx_0-2]", "1")
    assert _matches("[a-cx_0-2]", "_")
    assert not _matches("[a-cx_0-2]", "d")


def test_caret_after_the_first_position_is_a_member() -> None:
    assert _matches("[a^]", "^")
    assert not _matches("[a^]", "b")


def test_backslash_in_a_class_escapes_the_next_character() -> None:
    assert _matches("[\\]]", "]")
    assert _matches("[\\-x]", "-")
    assert not _matches("[\\-x]", "a")
    assert _matches("[\\\\]", "\\")
    assert _matches("[\\^]", "^")


def test_close_bracket_right_after_open_ends_an_empty_class() -> None:
    """``[]`` matches nothing; ``[]a]`` is that, then the literal ``a]`` (not POSIX)."""
    assert not _matches("[]", "]")
    assert not _matches("[]", "a")
    assert not _matches("[]a]", "a]")
    assert not _matches("[]a]", "a")


def test_negated_empty_class_matches_any_one_character() -> None:
    assert _matches("[^]", "x")
    assert _matches("[^]", "]")
    assert not _matches("[^]", "xy")


def test_dash_before_close_bracket_makes_a_range_to_the_bracket() -> None:
    """``[a-]`` is the range ``]``..``a`` left open: ``] ^ _ ` a``, not ``-``."""
    for text in ["]", "^", "_", "`", "a"]:
        assert _matches("[a-]", text)
    assert not _matches("[a-]", "-")
    assert not _matches("[a-]", "b")
    assert _matches("[a-]x", "x")  # the open class swallowed "x" as a member
    assert not _matches("[a-]x", "_x")


def test_dash_ending_an_open_class_is_a_member() -> None:
    assert _matches("[a-", "-")
    assert _matches("[a-", "a")
    assert not _matches("[a-", "b")


def test_dash_before_close_bracket_is_not_a_member_unlike_posix() -> None:
    """In ``[ab-]`` the ``b-]`` is the range ``]``..``b``, so ``-`` does not match."""
    assert not _matches("[ab-]", "-")
    assert _matches("[ab-]", "_")
    assert not _matches("[ab-]", "c")


def test_unclosed_class_runs_to_the_end_and_matches_one_character() -> None:
    assert _matches("x[abc", "xb")
    assert not _matches("x[abc", "xd")
    assert not _matches("x[abc", "x")
    assert _matches("[^abc", "d")


def test_open_bracket_ending_the_pattern_matches_nothing() -> None:
    assert not _matches("a[", "a[")
    assert not _matches("a[", "ab")
    assert not _matches("[", "[")


def test_open_bracket_caret_ending_the_pattern_matches_any_character() -> None:
    assert _matches("a[^", "ab")
    assert _matches("[^", "^")
    assert not _matches("a[^", "a")


def test_backslash_ending_an_open_class_is_a_member() -> None:
    assert _matches("[\\", "\\")
    assert _matches("[a\\", "\\")
    assert not _matches("[\\", "a")


# --- escapes and literal metacharacters -------------------------------------------------


def test_backslash_makes_a_glob_character_literal() -> None:
    assert _matches("a\\*", "a*")
    assert not _matches("a\\*", "ab")
    assert _matches("a\\?", "a?")
    assert not _matches("a\\?", "ab")
    assert _matches("\\[a]", "[a]")
    assert _matches("\\\\", "\\")


def test_backslash_before_an_ordinary_character_is_that_character() -> None:
    assert _matches("photo\\.up", "photo.up")
    assert _matches("\\a", "a")


def test_trailing_backslash_is_a_literal_backslash() -> None:
    assert _matches("a\\", "a\\")
    assert not _matches("a\\", "a")
    assert _matches("\\", "\\")


def test_close_bracket_and_caret_outside_a_class_are_literal() -> None:
    assert _matches("a]", "a]")
    assert _matches("^a", "^a")
    assert _matches("a-b", "a-b")


def test_dot_is_an_ordinary_character() -> None:
    assert _matches("a.b", "a.b")
    assert not _matches("a.b", "axb")


# --- agreement with the C function ---------------------------------------------------------


def test_agrees_with_stringmatchlen_on_every_short_pattern() -> None:
    """Every pattern of up to 4 characters over ``ab*?[]^-\\``, on every short text."""
    texts = ["".join(t) for n in range(4) for t in itertools.product("ab]\\", repeat=n)]
    disagreements = []
    for size in range(1, 5):
        for chars in itertools.product("ab*?[]^-\\", repeat=size):
            pattern = "".join(chars)
            compiled = compile_pattern(pattern)
            for text in texts:
                if compiled.matches(text) is not _redis_stringmatchlen(pattern, text):
                    disagreements.append((pattern, text))
    assert disagreements == []


_PATTERN_ALPHABET = "ab.-_*?[]^\\"


@given(
    pattern=st.text(alphabet=_PATTERN_ALPHABET, min_size=1, max_size=20),
    text=st.text(alphabet="ab.-_]^\\", min_size=0, max_size=12),
)
def test_agrees_with_stringmatchlen_on_longer_patterns(pattern: str, text: str) -> None:
    assert compile_pattern(pattern).matches(text) is _redis_stringmatchlen(pattern, text)


@given(
    pattern=st.text(alphabet=string.printable, max_size=16),
    text=st.text(alphabet="ab:.-]^\\", max_size=10),
)
def test_compile_glob_agrees_with_stringmatchlen_on_any_characters(pattern: str, text: str) -> None:
    assert compile_glob(pattern).matches(text) is _redis_stringmatchlen(pattern, text)


def test_compile_glob_takes_full_channel_patterns_unvalidated() -> None:
    glob = compile_glob(escape_glob("app:ev:") + "photo.*")
    assert glob.matches("app:ev:photo.uploaded")
    assert not glob.matches("app:ev:video.uploaded")
    assert compile_glob("").matches("")


# --- the Pattern object ------------------------------------------------------------------


@pytest.mark.parametrize("source", ["photo.uploaded", "a]", "^a", "a-b"])
def test_pattern_without_glob_characters_is_literal(source: str) -> None:
    pattern = compile_pattern(source)
    assert pattern.is_literal
    assert pattern.matches(source)
    assert not pattern.matches(source + "x")


@pytest.mark.parametrize("source", ["photo.*", "*", "a?", "[ab]", "a\\.b", "a\\"])
def test_pattern_with_glob_characters_is_not_literal(source: str) -> None:
    assert not compile_pattern(source).is_literal


def test_pattern_keeps_its_source() -> None:
    assert compile_pattern("photo.*").source == "photo.*"


def test_compiled_patterns_are_cached_and_compare_by_source() -> None:
    assert compile_pattern("user.*.seen") is compile_pattern("user.*.seen")
    assert compile_pattern("a*") == compile_pattern("a*")
    assert compile_pattern("a*") != compile_pattern("b*")
    assert len({compile_pattern("a*"), compile_pattern("a*")}) == 1


def test_pattern_is_frozen() -> None:
    pattern = compile_pattern("a*")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pattern.source = "b*"  # type: ignore[misc]


def test_pattern_repr_shows_the_source() -> None:
    assert "photo.*" in repr(compile_pattern("photo.*"))
    assert isinstance(compile_pattern("a"), Pattern)


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["a", "photo.*", "*.processing.*", "[a-z]?", "[^x]*", "a\\*", "A-Z_09", "*" * 255],
)
def test_valid_pattern_is_returned(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize("value", [None, 1, b"photo.*", ["photo.*"]])
def test_non_str_pattern_is_rejected(value: object) -> None:
    with pytest.raises(InvalidPatternError, match="must be a str"):
        validate_pattern(value)


def test_empty_pattern_is_rejected() -> None:
    with pytest.raises(InvalidPatternError, match="must not be empty"):
        validate_pattern("")


def test_pattern_over_255_characters_is_rejected() -> None:
    assert validate_pattern("a" * MAX_PATTERN_LENGTH)
    with pytest.raises(InvalidPatternError, match="256 characters long, at most 255"):
        validate_pattern("a" * 256)


@pytest.mark.parametrize(
    ("pattern", "char", "index"),
    [
        ("photo uploaded", "' '", 5),
        ("room:*", "':'", 4),
        ("a/b", "'/'", 1),
        ("{tag}*", "'{'", 0),
        ("caf\u00e9.*", "'\u00e9'", 3),
        ("a\n", "'\\\\n'", 1),
        ("a,b", "','", 1),
    ],
)
def test_pattern_with_a_disallowed_character_names_it(pattern: str, char: str, index: int) -> None:
    with pytest.raises(InvalidPatternError, match=f"character {char} at index {index}"):
        validate_pattern(pattern)


def test_compile_pattern_validates() -> None:
    with pytest.raises(InvalidPatternError):
        compile_pattern("bad pattern")
    with pytest.raises(InvalidPatternError):
        compile_pattern(None)  # type: ignore[arg-type]


def test_invalid_pattern_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid pattern") as info:
        validate_pattern("")
    assert isinstance(info.value, ValidationError)


# --- escape_glob ------------------------------------------------------------------------


def test_escape_glob_escapes_the_glob_characters() -> None:
    assert escape_glob("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"


def test_escape_glob_leaves_other_characters_alone() -> None:
    assert escape_glob("eventbus:ev:^-.") == "eventbus:ev:^-."


@given(st.text(alphabet=string.printable, max_size=20))
def test_escaped_text_matches_only_itself(text: str) -> None:
    escaped = escape_glob(text)
    assert _redis_stringmatchlen(escaped, text) is (text != "" or escaped == "")
    assert not _redis_stringmatchlen(escaped, text + "x")
    assert not _redis_stringmatchlen(escaped, "x" + text)


@given(
    prefix=st.text(alphabet=string.printable, min_size=1, max_size=12),
    pattern=st.text(alphabet=_PATTERN_ALPHABET, min_size=1, max_size=12),
    text=st.text(alphabet="ab.-_", min_size=1, max_size=10),
)
def test_escaped_prefix_does_not_change_what_a_pattern_matches(
    prefix: str, pattern: str, text: str
) -> None:
    """``escape_glob(prefix) + pattern`` matches ``prefix + text`` iff ``pattern`` matches ``text``."""
    expected = compile_pattern(pattern).matches(text)
    assert _redis_stringmatchlen(escape_glob(prefix) + pattern, prefix + text) is expected
