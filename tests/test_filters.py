"""Subscription filters: the Node condition shape, compiled once (pure tests)."""

from __future__ import annotations

import copy
import datetime as dt
import math
import types
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus._core.filters import compile_filter
from eventbus._errors import InvalidFilterError, ValidationError
from eventbus._models import Event

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

README_FILTER = {
    "conditions": [
        {"field": "data.priority", "operator": "equals", "value": "high"},
        {"field": "data.size", "operator": "greaterThan", "value": 1_000_000},
    ],
    "operator": "AND",
}


def make_event(data: Any = None, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "id": "01HXAMPLE0000000000000000",
        "type": "photo.uploaded",
        "data": {} if data is None else data,
        "source": "photo-api",
        "time": T0,
    }
    values.update(fields)
    return Event(**values)


def check(spec: Any, event: Event) -> bool:
    predicate = compile_filter(spec)
    assert predicate is not None
    result = predicate(event)
    assert isinstance(result, bool)
    return result


def cond(field: str, operator: str, *value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"field": field, "operator": operator}
    if value:
        (spec["value"],) = value
    return spec


def holds(field: str, operator: str, value: Any, data: Any) -> bool:
    """Whether ``{field, operator, value}`` holds for an event with ``data``."""
    return check(cond(field, operator, value), make_event(data))


# --- what compile_filter accepts --------------------------------------------------------


def test_none_means_no_filter() -> None:
    assert compile_filter(None) is None


def test_callable_is_returned_unchanged() -> None:
    def is_big(event: Any) -> bool:
        return bool(event.data.get("size", 0) > 10)

    assert compile_filter(is_big) is is_big


def test_readme_filter_needs_both_conditions() -> None:
    assert check(README_FILTER, make_event({"priority": "high", "size": 2_000_000}))
    assert not check(README_FILTER, make_event({"priority": "low", "size": 2_000_000}))
    assert not check(README_FILTER, make_event({"priority": "high", "size": 10}))
    assert not check(README_FILTER, make_event({"priority": "high"}))


def test_single_condition_is_a_whole_filter() -> None:
    spec = cond("data.priority", "equals", "high")
    assert check(spec, make_event({"priority": "high"}))
    assert not check(spec, make_event({"priority": "low"}))


def test_group_operator_defaults_to_and() -> None:
    spec = {"conditions": [cond("data.a", "equals", 1), cond("data.b", "equals", 2)]}
    assert check(spec, make_event({"a": 1, "b": 2}))
    assert not check(spec, make_event({"a": 1, "b": 3}))


@pytest.mark.parametrize("operator", ["OR", "or", "Or"])
def test_or_group_needs_one_condition_in_any_case(operator: str) -> None:
    spec = {
        "operator": operator,
        "conditions": [cond("data.a", "equals", 1), cond("data.b", "equals", 2)],
    }
    assert check(spec, make_event({"a": 1, "b": 0}))
    assert check(spec, make_event({"a": 0, "b": 2}))
    assert not check(spec, make_event({"a": 0, "b": 0}))


@pytest.mark.parametrize("operator", ["and", "And"])
def test_and_group_operator_is_case_insensitive(operator: str) -> None:
    spec = {"operator": operator, "conditions": [cond("data.a", "equals", 1)] * 3}
    assert check(spec, make_event({"a": 1}))
    assert not check(spec, make_event({"a": 2}))


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_groups_of_every_size_combine_all_and_any(count: int) -> None:
    conditions = [cond(f"data.k{i}", "equals", True) for i in range(count)]
    all_true = {f"k{i}": True for i in range(count)}
    one_true = {"k0": True} | {f"k{i}": False for i in range(1, count)}
    none_true = {f"k{i}": False for i in range(count)}
    and_spec = {"operator": "AND", "conditions": conditions}
    or_spec = {"operator": "OR", "conditions": conditions}
    assert check(and_spec, make_event(all_true))
    assert check(and_spec, make_event(one_true)) is (count == 1)
    assert check(or_spec, make_event(one_true))
    assert not check(or_spec, make_event(none_true))


def test_groups_nest() -> None:
    spec = {
        "operator": "OR",
        "conditions": [
            {
                "operator": "AND",
                "conditions": [
                    cond("data.priority", "equals", "high"),
                    cond("data.size", "greaterThan", 100),
                ],
            },
            {"conditions": [cond("type", "endsWith", ".urgent")]},
        ],
    }
    assert check(spec, make_event({"priority": "high", "size": 101}))
    assert not check(spec, make_event({"priority": "high", "size": 99}))
    assert check(spec, make_event({}, type="photo.urgent"))


def test_tuples_are_accepted_for_lists() -> None:
    spec = {"conditions": (cond("data.a", "in", (1, 2)),)}
    assert check(spec, make_event({"a": 2}))


def test_compiled_filter_never_reads_the_spec_again() -> None:
    spec = copy.deepcopy(README_FILTER)
    predicate = compile_filter(spec)
    assert predicate is not None
    spec["conditions"][0]["value"] = "low"  # type: ignore[index]
    spec["operator"] = "OR"
    spec.clear()
    assert predicate(make_event({"priority": "high", "size": 2_000_000}))
    assert not predicate(make_event({"priority": "low", "size": 2_000_000}))


# --- fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "photo.uploaded"),
        ("source", "photo-api"),
        ("id", "01HXAMPLE0000000000000000"),
        ("room", "photo:1"),
        ("user", "user-456"),
        ("group", "thumbnails"),
        ("delivery_attempt", 2),
        ("broadcast", False),
        ("headers.traceparent", "00-abc-def-01"),
        ("time", T0),
    ],
)
def test_field_reads_an_event_attribute(field: str, value: Any) -> None:
    event = make_event(
        room="photo:1",
        user="user-456",
        group="thumbnails",
        delivery_attempt=2,
        headers={"traceparent": "00-abc-def-01"},
    )
    assert check(cond(field, "equals", value), event)
    assert not check(cond(field, "equals", "something else"), event)


def test_field_path_walks_mappings_and_list_indices() -> None:
    data = {"items": [{"sku": "A1"}, {"sku": "B2", "tags": ["x", "y"]}], "meta": {"a": {"b": 3}}}
    assert holds("data.items.0.sku", "equals", "A1", data)
    assert holds("data.items.1.tags.1", "equals", "y", data)
    assert holds("data.meta.a.b", "equals", 3, data)


def test_digit_segment_is_a_key_in_a_mapping() -> None:
    assert holds("data.codes.404", "equals", "not found", {"codes": {"404": "not found"}})


def test_index_past_the_end_is_missing() -> None:
    data = {"items": [1, 2]}
    assert not holds("data.items.2", "equals", None, data)
    assert holds("data.items.2", "notEquals", 1, data)
    assert not holds("data.items.2", "exists", True, data)


def test_path_through_a_scalar_or_a_str_is_missing() -> None:
    data = {"name": "alice", "size": 3}
    assert not holds("data.name.0", "equals", "a", data)
    assert not holds("data.size.x", "exists", True, data)
    assert not holds("data.items.x", "equals", 1, {"items": [1]})  # non-digit index


def test_attribute_the_event_lacks_is_missing() -> None:
    bare = types.SimpleNamespace(data={"a": 1})
    predicate = compile_filter(cond("room", "exists"))
    assert predicate is not None
    assert predicate(bare) is False
    not_predicate = compile_filter(cond("room", "notEquals", "x"))
    assert not_predicate is not None
    assert not_predicate(bare) is True


def test_path_in_a_non_dict_mapping_works() -> None:
    event = make_event(headers=types.MappingProxyType({"x-id": "7"}))
    assert check(cond("headers.x-id", "equals", "7"), event)


# --- equals / notEquals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "actual", "expected"),
    [
        ("high", "high", True),
        ("high", "High", False),
        (5, 5, True),
        (5, 5.0, True),
        (5, "5", False),
        ("5", 5, False),
        (1, True, False),
        (True, 1, False),
        (0, False, False),
        (False, 0, False),
        (True, True, True),
        (None, None, True),
        (None, 0, False),
        (None, "", False),
        ([1, 2], [1, 2], True),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, "a", False),
        ([1], True, False),
        (math.nan, math.nan, False),
    ],
)
def test_equals_follows_json_equality(value: Any, actual: Any, expected: bool) -> None:
    assert holds("data.x", "equals", value, {"x": actual}) is expected
    assert holds("data.x", "notEquals", value, {"x": actual}) is not expected


def test_equals_missing_field_is_false_and_not_equals_true() -> None:
    assert not holds("data.x", "equals", None, {})
    assert holds("data.x", "notEquals", None, {})
    assert holds("data.x", "notEquals", "high", {})


def test_equals_compares_datetimes() -> None:
    assert check(cond("time", "equals", T0), make_event())
    assert not check(cond("time", "equals", T0 + dt.timedelta(seconds=1)), make_event())


def test_equals_never_raises_on_odd_objects() -> None:
    class Angry:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = object.__hash__

    assert not holds("data.x", "equals", [1], {"x": Angry()})
    assert holds("data.x", "notEquals", [1], {"x": Angry()})


# --- ordering -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "actual", "expected"),
    [
        ("greaterThan", 11, True),
        ("greaterThan", 10, False),
        ("greaterThan", 9.5, False),
        ("greaterThanOrEqual", 10, True),
        ("greaterThanOrEqual", 10.0, True),
        ("greaterThanOrEqual", 9, False),
        ("lessThan", 9, True),
        ("lessThan", 10, False),
        ("lessThanOrEqual", 10, True),
        ("lessThanOrEqual", 10.5, False),
    ],
)
def test_ordering_operators_compare_numbers(operator: str, actual: Any, expected: bool) -> None:
    assert holds("data.n", operator, 10, {"n": actual}) is expected


def test_ordering_compares_strings_with_strings() -> None:
    assert holds("data.s", "greaterThan", "b", {"s": "c"})
    assert not holds("data.s", "greaterThan", "b", {"s": "a"})
    assert holds("data.s", "lessThanOrEqual", "b", {"s": "b"})


def test_ordering_compares_datetimes() -> None:
    assert check(cond("time", "greaterThan", T0 - dt.timedelta(days=1)), make_event())
    assert not check(cond("time", "lessThan", T0), make_event())
    assert check(cond("time", "lessThanOrEqual", T0), make_event())


def test_ordering_naive_against_aware_datetime_is_false() -> None:
    naive = dt.datetime(2024, 1, 1)
    assert not check(cond("time", "greaterThan", naive), make_event())
    assert not check(cond("time", "lessThan", naive), make_event())


@pytest.mark.parametrize(
    ("value", "actual"),
    [
        (1, "a"),
        ("a", 1),
        (0, True),
        (0, False),
        (0, None),
        (0, [1]),
        (0, {"a": 1}),
        ("a", None),
        (T0, "2024-05-01"),
        (T0, 1),
        (0, T0),
        (0, math.nan),
    ],
)
def test_ordering_between_incompatible_kinds_is_false(value: Any, actual: Any) -> None:
    for operator in ["greaterThan", "greaterThanOrEqual", "lessThan", "lessThanOrEqual"]:
        assert not holds("data.x", operator, value, {"x": actual}), operator


def test_ordering_missing_field_is_false() -> None:
    for operator in ["greaterThan", "greaterThanOrEqual", "lessThan", "lessThanOrEqual"]:
        assert not holds("data.x", operator, 0, {})


# --- in / notIn ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "actual", "expected"),
    [
        (["a", "b"], "a", True),
        (["a", "b"], "c", False),
        ([1, 2], 2.0, True),
        ([1, 2], True, False),
        ([True], 1, False),
        ([True, "x"], True, True),
        ([False], False, True),
        ([None], None, True),
        ([[1], [2]], [2], True),
        ([{"a": 1}], {"a": 1}, True),
        (["a"], ["a"], False),
        ([], "a", False),
    ],
)
def test_in_checks_membership_strictly(values: list[Any], actual: Any, expected: bool) -> None:
    assert holds("data.x", "in", values, {"x": actual}) is expected
    assert holds("data.x", "notIn", values, {"x": actual}) is not expected


def test_in_missing_field_is_false_and_not_in_true() -> None:
    assert not holds("data.x", "in", ["a", None], {})
    assert holds("data.x", "notIn", ["a"], {})


# --- contains -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "actual", "expected"),
    [
        ("ell", "hello", True),
        ("xyz", "hello", False),
        ("", "hello", True),
        (1, "a1", False),
        ("red", ["red", "blue"], True),
        ("re", ["red", "blue"], False),
        (2, [1, 2, 3], True),
        (2, (1, 2, 3), True),
        (1, [True], False),
        (True, [1], False),
        (True, [True], True),
        (None, [None], True),
        ("key", {"key": 0}, True),
        ("nope", {"key": 0}, False),
        ("1", 1, False),
        (1, 10, False),
        ("a", None, False),
    ],
)
def test_contains_means_substring_item_or_key(value: Any, actual: Any, expected: bool) -> None:
    assert holds("data.x", "contains", value, {"x": actual}) is expected


def test_contains_missing_field_is_false() -> None:
    assert not holds("data.x", "contains", "a", {})


# --- startsWith / endsWith ----------------------------------------------------------------


def test_starts_with_and_ends_with_check_strings() -> None:
    assert holds("data.s", "startsWith", "pho", {"s": "photo"})
    assert not holds("data.s", "startsWith", "oto", {"s": "photo"})
    assert holds("data.s", "endsWith", "oto", {"s": "photo"})
    assert not holds("data.s", "endsWith", "pho", {"s": "photo"})
    assert check(cond("type", "startsWith", "photo."), make_event())


def test_starts_with_and_ends_with_are_false_for_non_strings() -> None:
    for operator in ["startsWith", "endsWith"]:
        assert not holds("data.s", operator, "1", {"s": 1})
        assert not holds("data.s", operator, "a", {"s": ["a"]})
        assert not holds("data.s", operator, "a", {})


# --- exists -------------------------------------------------------------------------------


def test_exists_defaults_to_true() -> None:
    assert holds("data.x", "exists", True, {"x": 1})
    assert check(cond("data.x", "exists"), make_event({"x": 1}))
    assert not check(cond("data.x", "exists"), make_event({}))


def test_exists_false_wants_the_field_absent() -> None:
    assert holds("data.x", "exists", False, {})
    assert not holds("data.x", "exists", False, {"x": 0})


def test_null_value_exists() -> None:
    assert holds("data.x", "exists", True, {"x": None})
    assert check(cond("room", "exists"), make_event())  # room=None is present


# --- matches ------------------------------------------------------------------------------


def test_matches_searches_anywhere_in_the_string() -> None:
    assert holds("data.s", "matches", "ot", {"s": "photo"})
    assert holds("data.s", "matches", "^ph.*o$", {"s": "photo"})
    assert not holds("data.s", "matches", "^ot", {"s": "photo"})
    assert holds("data.email", "matches", r"@example\.com$", {"email": "a@example.com"})


def test_matches_is_false_for_non_strings_and_missing_fields() -> None:
    assert not holds("data.s", "matches", "1", {"s": 1})
    assert not holds("data.s", "matches", ".*", {})


# --- evaluation never raises --------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
_OPERATOR_VALUES = {
    "equals": _json,
    "notEquals": _json,
    "greaterThan": st.integers() | st.floats() | st.text(max_size=3),
    "greaterThanOrEqual": st.integers() | st.floats() | st.text(max_size=3),
    "lessThan": st.integers() | st.floats() | st.text(max_size=3),
    "lessThanOrEqual": st.integers() | st.floats() | st.text(max_size=3),
    "in": st.lists(_json, max_size=4),
    "notIn": st.lists(_json, max_size=4),
    "contains": st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    "startsWith": st.text(max_size=3),
    "endsWith": st.text(max_size=3),
    "exists": st.booleans(),
    "matches": st.sampled_from(["a", "^$", ".*", "[0-9]+"]),
}


@st.composite
def _conditions(draw: st.DrawFn) -> dict[str, Any]:
    operator = draw(st.sampled_from(sorted(_OPERATOR_VALUES)))
    field = draw(st.sampled_from(["data", "data.a", "data.a.0", "data.a.b", "type", "time"]))
    return cond(field, operator, draw(_OPERATOR_VALUES[operator]))


@given(
    conditions=st.lists(_conditions(), min_size=1, max_size=4),
    operator=st.sampled_from(["AND", "OR"]),
    data=_json,
)
def test_any_valid_filter_answers_a_bool_for_any_data(
    conditions: list[dict[str, Any]], operator: str, data: Any
) -> None:
    spec = {"operator": operator, "conditions": conditions}
    check(spec, make_event(data))
    check(spec, make_event({"a": data}))


@given(value=_json, data=_json)
def test_not_equals_is_the_negation_of_equals(value: Any, data: Any) -> None:
    event = make_event({"a": data})
    assert check(cond("data.a", "notEquals", value), event) is not check(
        cond("data.a", "equals", value), event
    )


# --- malformed filters --------------------------------------------------------------------


def _error(spec: Any) -> str:
    with pytest.raises(InvalidFilterError) as info:
        compile_filter(spec)
    return str(info.value)


@pytest.mark.parametrize("spec", [["a"], "data.x == 1", 42, b"x"])
def test_spec_that_is_no_mapping_or_callable_is_rejected(spec: Any) -> None:
    assert "expected None, a callable or a mapping" in _error(spec)


def test_unknown_group_key_is_rejected() -> None:
    message = _error({"conditions": [cond("type", "exists")], "mode": "all"})
    assert "unknown key(s) 'mode' in a group" in message


@pytest.mark.parametrize("operator", ["XOR", "NOT", "", 1, None])
def test_bad_group_operator_is_rejected(operator: Any) -> None:
    message = _error({"operator": operator, "conditions": [cond("type", "exists")]})
    assert message.startswith("invalid filter at operator: group operator must be 'AND' or 'OR'")


@pytest.mark.parametrize("conditions", [{"field": "type"}, "type", None, 3])
def test_conditions_that_are_not_a_list_are_rejected(conditions: Any) -> None:
    assert "invalid filter at conditions: must be a list" in _error({"conditions": conditions})


def test_empty_conditions_are_rejected() -> None:
    assert "invalid filter at conditions: must not be empty" in _error({"conditions": []})


def test_nested_empty_conditions_point_at_the_group() -> None:
    spec = {"conditions": [cond("type", "exists"), {"conditions": []}]}
    assert "at conditions[1].conditions: must not be empty" in _error(spec)


@pytest.mark.parametrize("item", ["type", 1, None, ["a"]])
def test_condition_that_is_not_a_mapping_is_rejected(item: Any) -> None:
    message = _error({"conditions": [cond("type", "exists"), item]})
    assert "at conditions[1]: must be a condition or a group (a mapping)" in message


def test_unknown_condition_key_is_rejected() -> None:
    spec = {"conditions": [{"field": "type", "operator": "equals", "value": 1, "op": "x"}]}
    assert "at conditions[0]: unknown key(s) 'op' in a condition" in _error(spec)


def test_missing_field_is_rejected() -> None:
    message = _error({"conditions": [{"operator": "equals", "value": 1}]})
    assert "at conditions[0].field: missing" in message


@pytest.mark.parametrize("field", [None, 1, "", ["data"]])
def test_field_that_is_not_a_path_is_rejected(field: Any) -> None:
    message = _error({"field": field, "operator": "exists"})
    assert "at field: must be a non-empty dotted path" in message


@pytest.mark.parametrize("field", ["data..x", "data.", ".data", "data.x."])
def test_field_with_an_empty_segment_is_rejected(field: str) -> None:
    assert "at field: empty segment" in _error({"field": field, "operator": "exists"})


@pytest.mark.parametrize("field", ["payload.x", "Data.x", "metadata", "__class__"])
def test_field_naming_no_event_attribute_is_rejected(field: str) -> None:
    message = _error({"field": field, "operator": "exists"})
    assert "at field: unknown event attribute" in message
    assert "data, delivery_attempt" in message


def test_missing_operator_is_rejected() -> None:
    message = _error({"conditions": [{"field": "type", "value": 1}]})
    assert "at conditions[0].operator: missing" in message


def test_operator_that_is_not_a_str_is_rejected() -> None:
    message = _error({"field": "type", "operator": 1, "value": 1})
    assert "at operator: must be a str, got int" in message


@pytest.mark.parametrize("operator", ["eq", "Equals", "greater_than", "regex"])
def test_unknown_operator_is_rejected_with_the_list(operator: str) -> None:
    spec = {"conditions": [cond("type", "exists"), cond("data.x", operator, 1)]}
    message = _error(spec)
    assert f"at conditions[1].operator: unknown operator {operator!r}" in message
    assert "equals, notEquals, greaterThan" in message
    assert "exists" in message


def test_group_operator_inside_a_condition_gets_a_hint() -> None:
    message = _error({"field": "type", "operator": "and", "value": 1})
    assert "'AND'/'OR' combine a group's 'conditions'" in message


def test_missing_value_is_rejected() -> None:
    message = _error({"conditions": [{"field": "type", "operator": "equals"}]})
    assert "at conditions[0].value: missing (operator 'equals' needs a value)" in message


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_exists_value_that_is_not_a_bool_is_rejected(value: Any) -> None:
    assert "at value: 'exists' takes true or false" in _error(cond("type", "exists", value))


@pytest.mark.parametrize(
    "operator", ["greaterThan", "greaterThanOrEqual", "lessThan", "lessThanOrEqual"]
)
@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}, dt.date(2024, 1, 1)])
def test_ordering_value_of_the_wrong_type_is_rejected(operator: str, value: Any) -> None:
    message = _error(cond("data.x", operator, value))
    assert f"at value: {operator!r} needs a number, a str or a datetime" in message


@pytest.mark.parametrize("operator", ["in", "notIn"])
@pytest.mark.parametrize("value", ["ab", 1, None, {"a": 1}, {1, 2}])
def test_in_value_that_is_not_a_list_is_rejected(operator: str, value: Any) -> None:
    assert f"at value: {operator!r} needs a list of values" in _error(
        cond("data.y", operator, value)
    )


@pytest.mark.parametrize("value", [[1], {"a": 1}, T0])
def test_contains_value_that_is_not_a_scalar_is_rejected(value: Any) -> None:
    message = _error(cond("data.x", "contains", value))
    assert "at value: 'contains' needs a str, number, bool or None" in message


@pytest.mark.parametrize("operator", ["startsWith", "endsWith", "matches"])
@pytest.mark.parametrize("value", [1, None, ["a"]])
def test_string_operator_value_that_is_not_a_str_is_rejected(operator: str, value: Any) -> None:
    assert f"at value: {operator!r} needs a str" in _error(cond("data.x", operator, value))


def test_bad_regular_expression_is_rejected() -> None:
    spec = {"conditions": [{"conditions": [cond("data.x", "matches", "([a-")]}]}
    message = _error(spec)
    assert "at conditions[0].conditions[0].value: bad regular expression '([a-'" in message


def test_filter_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid filter") as info:
        compile_filter({"conditions": []})
    assert isinstance(info.value, ValidationError)


def test_event_fields_are_those_of_event() -> None:
    """Every attribute of :class:`Event` can be filtered on."""
    event = make_event()
    for field in attrs.fields(Event):
        assert check(cond(field.name, "exists"), event), field.name
