"""Compare this environment's installed distributions with a lock file's pins.

    python scripts/lockcheck.py requirements/lock.txt   # exit 1 on any difference
    python scripts/lockcheck.py --show                  # only print the key versions

Every pin of the file whose environment marker holds here must be installed at exactly
that version, unless the distribution is not installed at all (the lock also pins tools
that a run does not install, such as uv and tox). A distribution installed here that the
file does not pin is reported too. The project and the venv's pip, setuptools and wheel
are not compared. The key
versions are printed either way, so that a run's log says what it tested.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

KEY = (
    "redis",
    "attrs",
    "tenacity",
    "python-socketio",
    "python-engineio",
    "flask",
    "django",
    "celery",
    "kombu",
    "uvicorn",
    "websockets",
    "pyjwt",
    "pytest",
    "mypy",
    "ruff",
    "sphinx",
)
# Not compared: the project itself, and the virtualenv's own pip, setuptools and wheel
# (the package is built in pip's isolated build environment, whose setuptools the lock
# pins through PIP_CONSTRAINT; the venv's copy is whatever its Python bundled).
UNPINNED = {"shared-infra-event-bus", "pip", "setuptools", "wheel"}


def installed() -> dict[str, str]:
    """Canonical name -> version of every distribution in this environment."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[canonicalize_name(name)] = dist.version
    return found


def pins(path: Path) -> dict[str, str]:
    """Canonical name -> pinned version, for the lines whose marker holds here."""
    result: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise SystemExit(f"{path}:{number}: not a requirement: {exc}") from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            raise SystemExit(f"{path}:{number}: not an exact pin: {line}")
        result[canonicalize_name(requirement.name)] = specifiers[0].version
    return result


def show(versions: dict[str, str]) -> None:
    """Print the key distributions' versions on one line."""
    parts = [f"{name} {versions[name]}" for name in KEY if name in versions]
    print("versions: " + ", ".join(parts))


def main(argv: list[str]) -> int:
    """Check (or with ``--show`` only print) and return the exit status."""
    versions = installed()
    if argv == ["--show"]:
        show(versions)
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[0])
    pinned = pins(path)
    problems = [
        f"  {name}: installed {versions[name]}, {path.name} pins {version}"
        for name, version in sorted(pinned.items())
        if name in versions and versions[name] != version and name not in UNPINNED
    ]
    problems += [
        f"  {name}: installed {version}, not in {path.name}"
        for name, version in sorted(versions.items())
        if name not in pinned and name not in UNPINNED
    ]
    show(versions)
    if problems:
        print(f"installed versions differ from {path}:", *problems, sep="\n", file=sys.stderr)
        print(
            "Recreate the environment (remove it, or EVENTBUS_REINSTALL=1), or refresh the "
            "lock (scripts/lock).",
            file=sys.stderr,
        )
        return 1
    matched = sum(1 for name in pinned if name in versions)
    print(f"{matched} installed distributions match {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
