"""The public surface: ``eventbus.__all__``, docstrings, and ``py.typed``."""

from __future__ import annotations

import configparser
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

import eventbus

PACKAGE_DIR = Path(eventbus.__file__).parent
PUBLIC_NAMES = [name for name in eventbus.__all__ if not name.startswith("_")]


def _is_ours(value: Any) -> bool:
    return (inspect.isclass(value) or inspect.isfunction(value)) and (
        getattr(value, "__module__", "") or ""
    ).split(".")[0] == "eventbus"


def test_all_is_sorted_and_unique() -> None:
    """eventbus.__all__ is sorted and lists each name once."""
    assert eventbus.__all__ == sorted(eventbus.__all__)
    assert len(set(eventbus.__all__)) == len(eventbus.__all__)


def test_every_name_in_all_exists() -> None:
    """Every name in __all__ is an attribute of eventbus."""
    missing = [name for name in eventbus.__all__ if not hasattr(eventbus, name)]
    assert missing == []


def test_every_public_class_and_function_is_in_all() -> None:
    """Each public class or function that eventbus defines and exposes is in __all__."""
    exposed = {
        name
        for name, value in vars(eventbus).items()
        if not name.startswith("_") and _is_ours(value)
    }
    assert exposed - set(eventbus.__all__) == set()


def test_exports_come_from_private_modules_and_are_not_private() -> None:
    """Public classes and functions in __all__ are defined in eventbus, under a public name."""
    for name in PUBLIC_NAMES:
        value = getattr(eventbus, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert _is_ours(value), name
            assert value.__name__ == name, name


def test_version_is_a_string() -> None:
    """eventbus.__version__ is exported and is a PEP 440-ish string."""
    assert isinstance(eventbus.__version__, str)
    assert eventbus.__version__[0].isdigit()


_ALIASES = [name for name in PUBLIC_NAMES if typing.get_origin(getattr(eventbus, name))]
_DEFINITIONS = [name for name in PUBLIC_NAMES if name not in _ALIASES]


def test_exports_are_classes_functions_or_literal_aliases() -> None:
    """What __all__ exports besides classes and functions are Literal type aliases."""
    for name in _ALIASES:
        assert typing.get_origin(getattr(eventbus, name)) is typing.Literal, name
    for name in _DEFINITIONS:
        value = getattr(eventbus, name)
        assert inspect.isclass(value) or inspect.isfunction(value), name


@pytest.mark.parametrize("name", _DEFINITIONS)
def test_public_classes_and_functions_have_docstrings(name: str) -> None:
    """Every public class and function in __all__ has a docstring with a summary line."""
    value = getattr(eventbus, name)
    doc = inspect.cleandoc(value.__doc__ or "")  # not getdoc: it inherits docstrings
    assert doc, f"{name} has no docstring"
    assert doc.splitlines()[0].strip(), f"{name}'s docstring has no summary line"


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties that ``cls`` itself defines (not attrs' dunders)."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, classmethod | staticmethod):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            members.append((name, value))
    return members


_DOCUMENTED_CLASSES = [
    value
    for value in (getattr(eventbus, name) for name in PUBLIC_NAMES)
    if inspect.isclass(value) and not issubclass(value, BaseException)
]


def test_the_main_classes_have_public_methods_to_check() -> None:
    """EventBus, Subscription and the configs are among the classes whose methods we check."""
    checked = {cls.__name__ for cls in _DOCUMENTED_CLASSES}
    assert {
        "EventBus",
        "Subscription",
        "EventBusConfig",
        "RedisConfig",
        "ClientConfig",
        "PerformanceConfig",
    } <= checked
    assert len(_public_members(eventbus.EventBus)) > 20


@pytest.mark.parametrize("cls", _DOCUMENTED_CLASSES, ids=lambda cls: cls.__name__)
def test_public_methods_have_docstrings(cls: type) -> None:
    """Every public method and property of each exported class has a docstring."""
    undocumented = [
        name for name, member in _public_members(cls) if not (member.__doc__ or "").strip()
    ]
    assert undocumented == [], f"{cls.__name__}: {undocumented}"


def test_public_classes_have_an_example() -> None:
    """EventBus, Subscription, Event and the main configs show an example in their docstring."""
    for cls in (
        eventbus.EventBus,
        eventbus.Subscription,
        eventbus.Event,
        eventbus.EventBusConfig,
        eventbus.RedisConfig,
    ):
        assert "Example" in (cls.__doc__ or ""), cls.__name__


def test_py_typed_is_shipped() -> None:
    """eventbus/py.typed exists and setup.cfg puts it in the wheel."""
    assert (PACKAGE_DIR / "py.typed").is_file()
    setup_cfg = PACKAGE_DIR.parent / "setup.cfg"
    if not setup_cfg.is_file():
        pytest.skip("not running from a source checkout")
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    assert "py.typed" in parser.get("options.package_data", "eventbus", fallback="")
