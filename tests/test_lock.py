"""The lock files of the checks agree with the ranges that setup.cfg declares.

``requirements/lock.txt`` (what ``scripts/test`` and tox install) must satisfy every
declared range, and ``requirements/lowest.txt`` (``scripts/test --lowest``) must pin every
runtime, extra and test dependency at exactly its declared minimum: otherwise a range
would be published that no run tests. ``scripts/lock`` refreshes both.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
SETUP_CFG = ROOT / "setup.cfg"
LOCK = ROOT / "requirements" / "lock.txt"
LOWEST = ROOT / "requirements" / "lowest.txt"
# Tools whose versions the lowest run does not install (it runs only the tests).
NOT_IN_LOWEST = {"lint", "docs", "dev"}


def _requirements(text: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line]


def _declared() -> dict[str, list[Requirement]]:
    """``install_requires`` and every extra of setup.cfg, by section name."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SETUP_CFG, encoding="utf-8")
    declared = {"install_requires": _requirements(parser["options"]["install_requires"])}
    for extra, text in parser["options.extras_require"].items():
        declared[extra] = _requirements(text)
    return declared


def _pins(path: Path) -> dict[str, set[Version]]:
    """Every pinned version by canonical name (a universal lock may pin a name twice,
    under different markers)."""
    pins: dict[str, set[Version]] = {}
    for requirement in _requirements(path.read_text(encoding="utf-8")):
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {requirement} is not a pin"
        pins.setdefault(canonicalize_name(requirement.name), set()).add(Version(specifier.version))
    return pins


def _lower_bound(requirement: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "~=")]
    return max(bounds) if bounds else None


DECLARED = _declared()


def test_the_reader_sees_the_declared_dependencies() -> None:
    """The parsing above is not vacuous: the core and the extras are all there."""
    core = {canonicalize_name(r.name) for r in DECLARED["install_requires"]}
    assert core == {"redis", "attrs", "tenacity", "python-socketio"}
    assert {"test", "lint", "docs", "gateway", "flask", "django", "celery"} <= DECLARED.keys()


@pytest.mark.parametrize("section", sorted(DECLARED))
def test_the_lock_satisfies_every_declared_range(section: str) -> None:
    pins = _pins(LOCK)
    problems = []
    for requirement in DECLARED[section]:
        versions = pins.get(canonicalize_name(requirement.name), set())
        if not versions:
            problems.append(f"{requirement}: not in {LOCK.name}")
        problems += [
            f"{requirement}: {LOCK.name} pins {version}"
            for version in sorted(versions)
            if not requirement.specifier.contains(version, prereleases=True)
        ]
    assert problems == [], "run scripts/lock"


@pytest.mark.parametrize("section", sorted(set(DECLARED) - NOT_IN_LOWEST))
def test_the_lowest_run_installs_every_declared_minimum(section: str) -> None:
    pins = _pins(LOWEST)
    problems = []
    for requirement in DECLARED[section]:
        bound = _lower_bound(requirement)
        versions = pins.get(canonicalize_name(requirement.name), set())
        if bound is None:
            problems.append(f"{requirement}: declares no minimum")
        elif versions != {bound}:
            problems.append(f"{requirement}: {LOWEST.name} pins {sorted(map(str, versions))}")
    assert problems == [], "run scripts/lock (or give the range a tested minimum)"


def test_an_extra_and_the_test_extra_declare_the_same_minimum() -> None:
    """The frameworks appear in their own extra and in `test`: one minimum for both, so
    that the lowest run (which installs `test`) tests the extra's."""
    in_test = {canonicalize_name(r.name): r for r in DECLARED["test"]}
    problems = [
        f"[{extra}] {requirement} but [test] {in_test[name]}"
        for extra in ("gateway", "flask", "django", "celery")
        for requirement in DECLARED[extra]
        if (name := canonicalize_name(requirement.name)) in in_test
        and _lower_bound(requirement) != _lower_bound(in_test[name])
    ]
    missing = [
        str(r)
        for extra in ("gateway", "flask", "django", "celery")
        for r in DECLARED[extra]
        if canonicalize_name(r.name) not in in_test
    ]
    assert problems == []
    assert missing == [], "the test extra must install every extra's framework"
