"""Subscription filters: the Node library's condition trees, compiled once into closures.

A filter is ``None``, a plain callable ``event -> bool``, or the Node shape::

    {
        "conditions": [
            {"field": "data.priority", "operator": "equals", "value": "high"},
            {"field": "data.size", "operator": "greaterThan", "value": 1_000_000},
        ],
        "operator": "AND",
    }

A group holds ``conditions`` (a non-empty list of conditions and groups) and an
``operator``, ``"AND"`` (the default) or ``"OR"``, in any case. A single condition is
accepted as a whole filter too.

A condition has a ``field``, an ``operator`` and (except for ``exists``) a ``value``.
The field is a dotted path: its first segment is an attribute of the event (``data``,
``type``, ``source``, ``id``, ``time``, ``room``, ``user``, ``broadcast``, ``headers``,
``delivery_attempt``, ``group``), each later one a mapping key or, when it is all
digits, a list index: ``data.items.0.sku``.

=======================  ========================================  ===================
operator                 value                                     true when the field
=======================  ========================================  ===================
``equals``               anything                                  equals it
``notEquals``            anything                                  does not equal it
``greaterThan``,         a number, str or datetime                 compares so, with a
``greaterThanOrEqual``,                                            value of the same
``lessThan``,                                                      kind
``lessThanOrEqual``
``in`` / ``notIn``       a list or tuple                           is / is not in it
``contains``             a str, number, bool or None               has it: substring
                                                                   of a str, item of a
                                                                   list, key of a dict
``startsWith``,          a str                                     is a str that
``endsWith``                                                       starts / ends so
``matches``              a regular expression (str)                is a str where
                                                                   ``re.search`` finds
                                                                   it
``exists``               a bool, default True                      is present (even if
                                                                   null) / absent
=======================  ========================================  ===================

Semantics follow JSON rather than Python where they differ: ``True`` is not ``1``
(``bool`` is neither equal to nor ordered with numbers), and a comparison between
values of different kinds (``"a" > 1``) is false; evaluation never raises. A missing
field makes every condition false except ``notEquals``, ``notIn`` and
``exists: False``.

Everything is checked when the filter is compiled, at subscribe time: an unknown
operator or key, a value of the wrong type, a bad regular expression or an empty
``conditions`` list raises :class:`~eventbus.InvalidFilterError` naming the offending
place (``conditions[1].operator``). Evaluation then runs a tree of closures and never
looks at the spec again.
"""

from __future__ import annotations

import datetime as dt
import operator as op
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias

import attrs

from eventbus._errors import InvalidFilterError
from eventbus._models import Event

__all__ = [
    "FilterPredicate",
    "FilterSpec",
    "compile_filter",
]

FilterPredicate: TypeAlias = Callable[[Any], bool]
"""A compiled filter: takes an event, says whether its handler should run."""

FilterSpec: TypeAlias = Mapping[str, Any] | Callable[[Any], bool]
"""What ``filter=`` accepts: a Node-style condition tree, or a callable."""

_Test: TypeAlias = Callable[[Any], bool]
_Getter: TypeAlias = Callable[[Any], Any]
_Builder: TypeAlias = Callable[[Any, str, str], _Test]


class _Missing:
    """The type of :data:`_MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()
"""What a field getter returns when the path does not exist in the event."""

_EVENT_FIELDS: Final = frozenset(a.name for a in attrs.fields(Event))
_GROUP_KEYS: Final = frozenset({"conditions", "operator"})
_CONDITION_KEYS: Final = frozenset({"field", "operator", "value"})
_GROUP_OPERATORS: Final = ("AND", "OR")


def compile_filter(spec: FilterSpec | None) -> FilterPredicate | None:
    """Compile a filter spec into a predicate ``event -> bool``, or None for no filter.

    Args:
        spec: None, a callable (returned unchanged), a group
            ``{"conditions": [...], "operator": "AND" | "OR"}`` or a single condition
            ``{"field": ..., "operator": ..., "value": ...}``; see the module docs.

    Raises:
        InvalidFilterError: the spec is malformed; the message names the place, such as
            ``conditions[1].operator``.
    """
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return _compile_node(spec, "")
    if callable(spec):
        return spec
    raise _error("", f"expected None, a callable or a mapping, got {type(spec).__name__}")


def _compile_node(spec: Mapping[Any, Any], where: str) -> _Test:
    """Compile a group (it has ``conditions``) or a single condition."""
    if "conditions" in spec:
        return _compile_group(spec, where)
    return _compile_condition(spec, where)


def _compile_group(spec: Mapping[Any, Any], where: str) -> _Test:
    """Compile ``{"conditions": [...], "operator": ...}`` into an all-of or any-of test."""
    _reject_unknown_keys(spec, _GROUP_KEYS, "a group", where)
    combine = _all_of
    if "operator" in spec:
        name = spec["operator"]
        if not isinstance(name, str) or name.upper() not in _GROUP_OPERATORS:
            raise _error(
                _join(where, "operator"),
                f"group operator must be 'AND' or 'OR' (any case), got {name!r}",
            )
        combine = _all_of if name.upper() == "AND" else _any_of
    items_where = _join(where, "conditions")
    items = spec["conditions"]
    if not isinstance(items, list | tuple):
        raise _error(items_where, f"must be a list, got {type(items).__name__}")
    if not items:
        raise _error(items_where, "must not be empty")
    children: list[_Test] = []
    for index, item in enumerate(items):
        item_where = f"{items_where}[{index}]"
        if not isinstance(item, Mapping):
            raise _error(
                item_where, f"must be a condition or a group (a mapping), got {type(item).__name__}"
            )
        children.append(_compile_node(item, item_where))
    return combine(children)


def _compile_condition(spec: Mapping[Any, Any], where: str) -> _Test:
    """Compile ``{"field": ..., "operator": ..., "value": ...}`` into a test."""
    _reject_unknown_keys(spec, _CONDITION_KEYS, "a condition", where)
    if "field" not in spec:
        raise _error(_join(where, "field"), "missing (every condition needs a field)")
    get = _compile_field(spec["field"], _join(where, "field"))

    operator_where = _join(where, "operator")
    if "operator" not in spec:
        raise _error(operator_where, "missing (every condition needs an operator)")
    name = spec["operator"]
    if not isinstance(name, str):
        raise _error(operator_where, f"must be a str, got {type(name).__name__}")
    if name not in _OPERATOR_NAMES:
        hint = (
            " ('AND'/'OR' combine a group's 'conditions')" if name.upper() in ("AND", "OR") else ""
        )
        raise _error(
            operator_where,
            f"unknown operator {name!r}{hint}; expected one of {', '.join(_OPERATOR_NAMES)}",
        )

    value_where = _join(where, "value")
    if name == "exists":
        wanted = spec.get("value", True)
        if not isinstance(wanted, bool):
            raise _error(value_where, f"'exists' takes true or false, got {wanted!r}")
        return _exists(get, wanted)
    if "value" not in spec:
        raise _error(value_where, f"missing (operator {name!r} needs a value)")
    build, if_missing = _OPERATORS[name]
    test = build(spec["value"], name, value_where)
    return _guarded(get, test, if_missing=if_missing)


def _reject_unknown_keys(
    spec: Mapping[Any, Any], allowed: frozenset[str], what: str, where: str
) -> None:
    """Raise if ``spec`` has a key that ``what`` (a group, a condition) does not take."""
    unknown = [key for key in spec if key not in allowed]
    if unknown:
        listed = ", ".join(repr(key) for key in unknown)
        raise _error(
            where,
            f"unknown key(s) {listed} in {what} (allowed: {', '.join(sorted(allowed))})",
        )


# --- fields ---------------------------------------------------------------------------


def _compile_field(field: object, where: str) -> _Getter:
    """Compile a dotted path into a getter that returns the value or :data:`_MISSING`."""
    if not isinstance(field, str) or not field:
        raise _error(where, f"must be a non-empty dotted path (str), got {field!r}")
    head, *rest = field.split(".")
    if not head or not all(rest):
        raise _error(where, f"empty segment in field path {field!r}")
    if head not in _EVENT_FIELDS:
        raise _error(
            where,
            f"unknown event attribute {head!r} in field {field!r}; "
            f"expected one of {', '.join(sorted(_EVENT_FIELDS))}",
        )
    steps = tuple((key, int(key) if key.isascii() and key.isdigit() else None) for key in rest)

    if len(steps) == 0:

        def get_attribute(event: Any) -> Any:
            return getattr(event, head, _MISSING)

        return get_attribute

    if len(steps) == 1:
        ((key, index),) = steps

        def get_one_level(event: Any) -> Any:
            return _descend(getattr(event, head, _MISSING), key, index)

        return get_one_level

    def get_path(event: Any) -> Any:
        value = getattr(event, head, _MISSING)
        for key, index in steps:
            value = _descend(value, key, index)
            if value is _MISSING:
                break
        return value

    return get_path


def _descend(value: Any, key: str, index: int | None) -> Any:
    """Take one path step: ``value[key]`` for a mapping, ``value[index]`` for a list."""
    if type(value) is dict or isinstance(value, Mapping):
        return value.get(key, _MISSING)
    if index is not None and isinstance(value, list | tuple):
        return value[index] if index < len(value) else _MISSING
    return _MISSING


# --- combinators ----------------------------------------------------------------------


def _all_of(tests: Sequence[_Test]) -> _Test:
    """A test that is true when every test in ``tests`` is (short-circuiting)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests

        def both(event: Any) -> bool:
            return first(event) and second(event)

        return both
    frozen = tuple(tests)

    def every(event: Any) -> bool:
        return all(test(event) for test in frozen)

    return every


def _any_of(tests: Sequence[_Test]) -> _Test:
    """A test that is true when some test in ``tests`` is (short-circuiting)."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests

        def either(event: Any) -> bool:
            return first(event) or second(event)

        return either
    frozen = tuple(tests)

    def some(event: Any) -> bool:
        return any(test(event) for test in frozen)

    return some


def _guarded(get: _Getter, test: _Test, *, if_missing: bool) -> _Test:
    """Apply ``test`` to the field's value, or answer ``if_missing`` when it is absent."""

    def condition(event: Any) -> bool:
        value = get(event)
        if value is _MISSING:
            return if_missing
        return test(value)

    return condition


def _exists(get: _Getter, wanted: bool) -> _Test:
    """The ``exists`` condition: the field is present (``wanted``) or absent."""

    def condition(event: Any) -> bool:
        return (get(event) is not _MISSING) is wanted

    return condition


# --- operators ------------------------------------------------------------------------
# Each builder checks the condition's value at compile time and returns a test that is
# applied to a present field value. It must return a bool and never raise.


def _is_number(value: object) -> bool:
    """True for int and float, but not bool (JSON has no 1 == true)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equality(value: Any) -> _Test:
    """A test for "equals ``value``", where booleans equal only booleans."""
    if value is None or isinstance(value, bool):

        def is_same(actual: Any) -> bool:
            return actual is value

        return is_same
    if isinstance(value, str):

        def equals_str(actual: Any) -> bool:
            return isinstance(actual, str) and actual == value

        return equals_str
    if _is_number(value):

        def equals_number(actual: Any) -> bool:
            return _is_number(actual) and bool(actual == value)

        return equals_number

    def equals_other(actual: Any) -> bool:
        if isinstance(actual, bool):
            return False
        try:
            return bool(actual == value)
        except Exception:
            return False

    return equals_other


def _build_equals(value: Any, name: str, where: str) -> _Test:
    """``equals``: any value."""
    return _equality(value)


def _build_not_equals(value: Any, name: str, where: str) -> _Test:
    """``notEquals``: any value."""
    equals = _equality(value)

    def differs(actual: Any) -> bool:
        return not equals(actual)

    return differs


def _ordering(compare: Callable[[Any, Any], bool]) -> _Builder:
    """Make the builder of an ordering operator (``greaterThan``...) from ``compare``."""

    def build(value: Any, name: str, where: str) -> _Test:
        if _is_number(value):

            def test_number(actual: Any) -> bool:
                return _is_number(actual) and compare(actual, value)

            return test_number
        if isinstance(value, str):

            def test_str(actual: Any) -> bool:
                return isinstance(actual, str) and compare(actual, value)

            return test_str
        if isinstance(value, dt.datetime):

            def test_datetime(actual: Any) -> bool:
                if not isinstance(actual, dt.datetime):
                    return False
                try:
                    return compare(actual, value)
                except TypeError:  # naive against aware
                    return False

            return test_datetime
        raise _error(where, f"{name!r} needs a number, a str or a datetime, got {value!r}")

    return build


def _membership(values: Sequence[Any]) -> _Test:
    """A test for "is one of ``values``", where booleans match only booleans."""
    booleans = tuple(v for v in values if isinstance(v, bool))
    others_list = [v for v in values if not isinstance(v, bool)]
    others: frozenset[Any] | tuple[Any, ...]
    try:
        others = frozenset(others_list)
    except TypeError:  # an unhashable value (a list, a dict): compare one by one
        others = tuple(others_list)

    def is_member(actual: Any) -> bool:
        if isinstance(actual, bool):
            return actual in booleans
        try:
            return actual in others
        except Exception:  # an unhashable field value is not among hashable values
            return False

    return is_member


def _build_in(value: Any, name: str, where: str) -> _Test:
    """``in``: a list or tuple of values."""
    if not isinstance(value, list | tuple):
        raise _error(where, f"{name!r} needs a list of values, got {value!r}")
    return _membership(value)


def _build_not_in(value: Any, name: str, where: str) -> _Test:
    """``notIn``: a list or tuple of values."""
    is_member = _build_in(value, name, where)

    def is_not_member(actual: Any) -> bool:
        return not is_member(actual)

    return is_not_member


def _build_contains(value: Any, name: str, where: str) -> _Test:
    """``contains``: a scalar; substring of a str, item of a list, key of a mapping."""
    if not (value is None or isinstance(value, str | int | float)):
        raise _error(where, f"{name!r} needs a str, number, bool or None, got {value!r}")
    equals = _equality(value)

    def contains(actual: Any) -> bool:
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        if isinstance(actual, list | tuple):
            return any(equals(item) for item in actual)
        if isinstance(actual, Mapping):
            return value in actual
        return False

    return contains


def _build_starts_with(value: Any, name: str, where: str) -> _Test:
    """``startsWith``: a str."""
    prefix = _require_str(value, name, where)

    def starts_with(actual: Any) -> bool:
        return isinstance(actual, str) and actual.startswith(prefix)

    return starts_with


def _build_ends_with(value: Any, name: str, where: str) -> _Test:
    """``endsWith``: a str."""
    suffix = _require_str(value, name, where)

    def ends_with(actual: Any) -> bool:
        return isinstance(actual, str) and actual.endswith(suffix)

    return ends_with


def _build_matches(value: Any, name: str, where: str) -> _Test:
    """``matches``: a regular expression, compiled now and applied with ``re.search``."""
    source = _require_str(value, name, where)
    try:
        search = re.compile(source).search
    except re.error as exc:
        raise _error(where, f"bad regular expression {source!r}: {exc}") from exc

    def matches(actual: Any) -> bool:
        return isinstance(actual, str) and search(actual) is not None

    return matches


def _require_str(value: Any, name: str, where: str) -> str:
    """Return ``value`` if it is a str, else raise the error for operator ``name``."""
    if not isinstance(value, str):
        raise _error(where, f"{name!r} needs a str, got {value!r}")
    return value


_OPERATORS: Final[dict[str, tuple[_Builder, bool]]] = {
    # name: (builder, result when the field is missing)
    "equals": (_build_equals, False),
    "notEquals": (_build_not_equals, True),
    "greaterThan": (_ordering(op.gt), False),
    "greaterThanOrEqual": (_ordering(op.ge), False),
    "lessThan": (_ordering(op.lt), False),
    "lessThanOrEqual": (_ordering(op.le), False),
    "in": (_build_in, False),
    "notIn": (_build_not_in, True),
    "contains": (_build_contains, False),
    "startsWith": (_build_starts_with, False),
    "endsWith": (_build_ends_with, False),
    "matches": (_build_matches, False),
}
"""The operators that take a value; ``exists`` is compiled by :func:`_compile_condition`."""

_OPERATOR_NAMES: Final = (*_OPERATORS, "exists")


# --- errors ---------------------------------------------------------------------------


def _join(where: str, key: str) -> str:
    """Extend a location such as ``conditions[1]`` by a key: ``conditions[1].operator``."""
    return f"{where}.{key}" if where else key


def _error(where: str, problem: str) -> InvalidFilterError:
    """Build the error for a malformed filter, pointing at ``where``."""
    return InvalidFilterError(
        f"invalid filter at {where}: {problem}" if where else f"invalid filter: {problem}"
    )
