"""The exception hierarchy: the tree in its docstring, builtins, and pickling (pure)."""

from __future__ import annotations

import builtins
import copy
import inspect
import pickle
import re
from typing import Any

import pytest

import eventbus
from eventbus import _errors
from eventbus._errors import (
    BusClosedError,
    BusStateError,
    ConfigurationError,
    EventBusError,
    HandlerError,
    HandlerTimeoutError,
    TransportConnectionError,
    TransportError,
    ValidationError,
)

ERROR_CLASSES: list[type[EventBusError]] = [getattr(_errors, name) for name in _errors.__all__]

# A value for every keyword-only field an exception class may take.
_FIELD_VALUES: dict[str, Any] = {
    "size": 2_000_000,
    "limit": 1_048_576,
    "timeout": 2.5,
    "capacity": 10_000,
    "kind": "json",
    "channel": "eventbus:ev:photo.uploaded",
    "payload": b"\xff{not json",
    "subscription_id": "sub-7",
    "event_id": "01JDQ7Z8X5N6M4K3J2H1G0F9E8",
    "event_type": "photo.uploaded",
    "attempts": 4,
    "stream": "eventbus:group:{thumbnails}",
    "group": "thumbnails",
    "code": "forbidden",
}


def _field_names(cls: type[EventBusError]) -> list[str]:
    """The keyword-only fields of ``cls.__init__`` (none when it is BaseException's)."""
    init = cls.__init__
    if not inspect.isfunction(init):
        return []
    return [
        name
        for name, param in inspect.signature(init).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _make(cls: type[EventBusError], message: str = "it went wrong") -> EventBusError:
    """An instance of ``cls`` with a message and every extra field it takes."""
    return cls(message, **{name: _FIELD_VALUES[name] for name in _field_names(cls)})


def _tree() -> dict[str, tuple[str | None, str | None]]:
    """Parse the module docstring's tree: name -> (parent name, extra builtin base)."""
    doc = _errors.__doc__ or ""
    block = doc.split("::", 1)[1]
    nodes: dict[str, tuple[str | None, str | None]] = {}
    stack: list[str] = []
    started = False
    for line in block.splitlines():
        if not line.strip():
            if started:
                break
            continue
        found = re.match(r"^(?P<lead>[\s│├└─]*)(?P<name>[A-Z]\w+)(?:\s+\((?P<base>\w+)\))?", line)
        assert found, f"unreadable tree line: {line!r}"
        if not started:
            indent = len(found["lead"])
            started = True
        depth = (len(found["lead"]) - indent) // 4
        del stack[depth:]
        nodes[found["name"]] = (stack[-1] if stack else None, found["base"])
        stack.append(found["name"])
    return nodes


def test_docstring_tree_names_every_exported_class_and_nothing_else() -> None:
    """The tree in eventbus/_errors.py's docstring lists exactly the classes in __all__."""
    assert set(_tree()) == set(_errors.__all__)


def test_classes_derive_exactly_as_the_docstring_tree_draws() -> None:
    """Each class's bases are its parent in the tree, plus the builtin named in brackets."""
    for name, (parent, base) in _tree().items():
        cls = getattr(_errors, name)
        parent_cls = getattr(_errors, parent) if parent else Exception
        extra = (getattr(builtins, base),) if base else ()
        assert cls.__bases__ == (parent_cls, *extra), name


def test_hierarchy_as_documented() -> None:
    """Configuration and validation errors are ValueErrors, misuse is a RuntimeError."""
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(ValidationError, ValueError)
    assert issubclass(BusStateError, RuntimeError)
    assert issubclass(BusClosedError, BusStateError)
    assert issubclass(TransportConnectionError, TransportError)
    assert issubclass(HandlerTimeoutError, HandlerError)
    for cls in ERROR_CLASSES:
        assert issubclass(cls, EventBusError)
    for cls in (TransportError, HandlerError, _errors.DecodeError):
        assert not issubclass(cls, ValueError | RuntimeError), cls
    # A transport failure is not a builtin ConnectionError/TimeoutError/OSError: callers
    # catch eventbus errors by their own names.
    for cls in (TransportConnectionError, _errors.PublishTimeoutError):
        assert not issubclass(cls, OSError), cls


def test_no_name_shadows_a_builtin() -> None:
    """No exception name equals a builtin (TimeoutError, ConnectionError...)."""
    exported = set(_errors.__all__) | {
        name for name, value in vars(_errors).items() if isinstance(value, type)
    }
    assert not exported & set(dir(builtins))


def test_every_error_is_exported_from_the_package() -> None:
    """Every exception in eventbus._errors is importable from eventbus."""
    for name in _errors.__all__:
        assert getattr(eventbus, name) is getattr(_errors, name)
        assert name in eventbus.__all__


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_error_pickles_with_its_message_and_fields(
    cls: type[EventBusError], protocol: int
) -> None:
    """pickle round-trips type, args, message and every extra field (Celery pickles them)."""
    original = _make(cls)
    restored = pickle.loads(pickle.dumps(original, protocol=protocol))
    assert type(restored) is cls
    assert restored.args == original.args == ("it went wrong",)
    assert str(restored) == "it went wrong"
    assert vars(restored) == vars(original)
    for name in _field_names(cls):
        assert getattr(restored, name) == _FIELD_VALUES[name]


def test_the_errors_with_fields_are_the_documented_ones() -> None:
    """Fields exist where documented, so the pickling test covers them."""
    with_fields = {cls.__name__: _field_names(cls) for cls in ERROR_CLASSES if _field_names(cls)}
    assert with_fields == {
        "EventTooLargeError": ["size", "limit"],
        "PublishTimeoutError": ["timeout"],
        "PublishBufferFullError": ["capacity"],
        "FilterError": ["subscription_id", "event_id"],
        "GroupMissingError": ["stream", "group"],
        "GatewayRefusedError": ["code"],
        "GatewayAuthError": ["code"],
        "DecodeError": ["kind", "channel", "payload"],
        "HandlerError": ["subscription_id", "event_id", "event_type", "attempts"],
        "HandlerTimeoutError": ["subscription_id", "event_id", "event_type", "attempts"],
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_error_copies(cls: type[EventBusError]) -> None:
    """copy.copy and copy.deepcopy (which use __reduce_ex__) keep args and fields."""
    original = _make(cls)
    for duplicate in (copy.copy(original), copy.deepcopy(original)):
        assert type(duplicate) is cls
        assert duplicate.args == original.args
        assert vars(duplicate) == vars(original)


def test_errors_with_fields_keep_them_as_attributes() -> None:
    """The documented extra fields are plain attributes."""
    error = _errors.DecodeError("bad", kind="utf8", channel="c", payload=b"\xff")
    assert (error.kind, error.channel, error.payload) == ("utf8", "c", b"\xff")
    too_large = _errors.EventTooLargeError("big", size=10, limit=5)
    assert (too_large.size, too_large.limit) == (10, 5)
    assert _errors.PublishTimeoutError("slow", timeout=1.5).timeout == 1.5
    assert _errors.PublishBufferFullError("full", capacity=3).capacity == 3


@pytest.mark.parametrize("cls", [HandlerError, HandlerTimeoutError])
def test_handler_error_with_a_cause_pickles_its_fields_not_the_cause(
    cls: type[HandlerError],
) -> None:
    """A HandlerError raised from a handler's exception keeps args and fields through pickle.

    pickle never keeps ``__cause__`` or ``__traceback__`` (of any exception); the bus puts
    the cause's repr into the message, so a pickled error still says what failed.
    """
    cause = KeyError("photoId")
    try:
        try:
            raise cause
        except KeyError as exc:
            raise _make(cls, f"handler of sub-7 failed after 4 attempt(s): {exc!r}") from exc
    except HandlerError as raised:
        original = raised
    assert original.__cause__ is cause
    restored = pickle.loads(pickle.dumps(original))
    assert type(restored) is cls
    assert restored.args == original.args
    assert "KeyError('photoId')" in str(restored)
    assert (
        restored.subscription_id,
        restored.event_id,
        restored.event_type,
        restored.attempts,
    ) == ("sub-7", _FIELD_VALUES["event_id"], "photo.uploaded", 4)
    assert restored.__cause__ is None
    assert restored.__traceback__ is None
    assert original.__cause__ is cause  # pickling did not disturb the original
