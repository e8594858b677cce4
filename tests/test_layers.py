"""The layering of STYLE.md, checked by reading every module's imports with ``ast``.

Layers, each importing only from its own or lower ones::

    types and errors   _errors, _models
    pure logic         _patterns, _names, _filters, _envelope, _config, _layout, _loss,
                       _stats, _retry, _scripts
    I/O                _transports/*
    dispatch and bus   _dispatch, _batch, _health, _hooks, _presence, _receiver,
                       _groups, _group_manager, _subscription, _bus
    public package     eventbus/__init__.py
    built on it        cli, _cli_groups, __main__, _demo, _worker: only ``eventbus``,
                       the stdlib, and attrs
                       (``attrs.evolve``/``asdict`` are how users handle the public
                       value classes)
    integrations       contrib.*: the above, and their own framework only
    testing kit        testing.*: the public package, the pure core, pytest (plugin)

Imports under ``if TYPE_CHECKING:`` are for annotations only and exempt.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import eventbus

PACKAGE_DIR = Path(eventbus.__file__).parent

TYPES = {"eventbus._errors", "eventbus._models"}
PURE = {
    "eventbus._patterns",
    "eventbus._names",
    "eventbus._filters",
    "eventbus._envelope",
    "eventbus._config",
    "eventbus._layout",
    "eventbus._loss",
    "eventbus._stats",
    "eventbus._retry",
    "eventbus._scripts",
}
CORE = TYPES | PURE
DISPATCH = {
    "eventbus._dispatch",
    "eventbus._batch",
    "eventbus._health",
    "eventbus._hooks",
    "eventbus._presence",
    "eventbus._receiver",
    "eventbus._groups",
    "eventbus._group_manager",
    "eventbus._subscription",
    "eventbus._bus",
}
TOP = {
    "eventbus.cli",
    "eventbus._cli_groups",
    "eventbus.__main__",
    "eventbus._demo",
    "eventbus._worker",
    "eventbus._cli_gateway",
}
# Each integration may import its framework (and what that framework is built on).
CONTRIB_FRAMEWORKS = {
    "eventbus.contrib.flask": {"flask", "werkzeug", "click"},
    "eventbus.contrib._flask_cli": {"flask", "werkzeug", "click"},
    "eventbus.contrib.django": {"django"},
    "eventbus.contrib.celery": {"celery", "kombu"},
}
FRAMEWORKS = {"flask", "werkzeug", "click", "django", "celery", "kombu", "pytest"}

# Third-party packages the pure core may use: attrs everywhere, tenacity only in _retry
# (tenacity stays behind one private module).
CORE_THIRD_PARTY = {"attrs": CORE, "tenacity": {"eventbus._retry"}}
# The rule encoded for threads: the pure core starts none. `threading` is imported only
# by _stats (a Lock around counters), _envelope (a Lock around ULID monotonicity) and
# _retry (threading.Event, the shutdown signal its sleep waits on), and only for these
# synchronisation primitives, never Thread or Timer.
THREADING_ALLOWED = {"eventbus._stats", "eventbus._envelope", "eventbus._retry"}
SYNC_PRIMITIVES = {"Lock", "RLock", "Event", "Condition", "Semaphore", "BoundedSemaphore"}
# No I/O or concurrency machinery in the pure core; nor logging: it raises, and
# reporting is the bus's job.
CORE_FORBIDDEN_STDLIB = {
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "multiprocessing",
    "concurrent",
    "asyncio",
    "_thread",
    "http",
    "urllib.request",
    "logging",
}


@attrs.frozen
class Import:
    """One imported module (``from a import b`` gives ``a`` and, if a module, ``a.b``)."""

    module: str
    names: tuple[str, ...]
    line: int
    top_level: bool  # at module level, outside functions and classes


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[Import]:
    """Every runtime import in ``path`` (TYPE_CHECKING blocks skipped), resolved to absolute."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, top_level)
                continue
            if isinstance(child, ast.Import):
                found.extend(
                    Import(alias.name, (), child.lineno, top_level) for alias in child.names
                )
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = tuple(alias.name for alias in child.names)
                found.append(Import(base, names, child.lineno, top_level))
                # `from eventbus import _bus` imports the module eventbus._bus.
                found.extend(
                    Import(f"{base}.{name}", (), child.lineno, top_level)
                    for name in names
                    if f"{base}.{name}" in MODULES
                )
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            visit(child, top_level and not nested)

    visit(tree, True)
    return found


def _within(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(modules: set[str], forbidden: set[str]) -> Iterator[str]:
    for module in sorted(modules & MODULES.keys()):
        for imp in _imports(MODULES[module]):
            if _within(imp.module, forbidden):
                yield f"{module}:{imp.line} imports {imp.module}"


def test_every_private_module_has_a_layer() -> None:
    """Each private module of eventbus is placed in a layer here (add new ones above)."""
    known = CORE | DISPATCH | TOP | {"eventbus"}
    unplaced = [
        name
        for name in MODULES
        if name not in known
        and not _within(
            name,
            {"eventbus._transports", "eventbus.testing", "eventbus.contrib", "eventbus.gateway"},
        )
        and name.rpartition(".")[2].startswith("_")
    ]
    assert unplaced == [], "place these modules in a layer in tests/test_layers.py"
    assert MODULES.keys() >= CORE


def test_the_import_reader_sees_real_imports() -> None:
    """The checker finds _bus's imports (so the rules below are not vacuous)."""
    found = {imp.module for imp in _imports(MODULES["eventbus._bus"])}
    assert {"eventbus._dispatch", "eventbus._transports", "threading"} <= found
    lazy = [imp for imp in _imports(MODULES["eventbus._transports"]) if not imp.top_level]
    assert "eventbus._transports.redis" in {imp.module for imp in lazy}


def test_types_and_errors_import_nothing_above_them() -> None:
    """_errors imports nothing of eventbus; _models at most _errors."""
    assert list(_violations({"eventbus._errors"}, {"eventbus"})) == []
    assert list(_violations({"eventbus._models"}, {"eventbus"} - {"eventbus._errors"})) == []
    for imp in _imports(MODULES["eventbus._models"]):
        if _within(imp.module, {"eventbus"}):
            assert _within(imp.module, {"eventbus._errors"}), imp


def test_pure_core_imports_only_the_core_stdlib_and_attrs() -> None:
    """The pure core never imports redis, socketio, a transport, _bus, _dispatch or the package."""
    problems = []
    for module in sorted(CORE):
        for imp in _imports(MODULES[module]):
            top = imp.module.split(".")[0]
            if top == "eventbus":
                if imp.module == "eventbus":
                    # `from eventbus import X` would import the whole package (and _bus).
                    problems.append(f"{module}:{imp.line} imports the public package")
                elif imp.module not in CORE:
                    problems.append(f"{module}:{imp.line} imports {imp.module}")
            elif top in sys.stdlib_module_names:
                if _within(imp.module, CORE_FORBIDDEN_STDLIB):
                    problems.append(f"{module}:{imp.line} imports {imp.module} (I/O)")
            elif module not in CORE_THIRD_PARTY.get(top, set()):
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


def test_pure_core_starts_no_threads() -> None:
    """Only _stats, _envelope and _retry import threading, and use only locks and events."""
    problems = []
    for module in sorted(CORE):
        path = MODULES[module]
        uses_threading = any(_within(imp.module, {"threading"}) for imp in _imports(path))
        if uses_threading and module not in THREADING_ALLOWED:
            problems.append(f"{module} imports threading")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "threading"
                and node.attr not in SYNC_PRIMITIVES
            ):
                problems.append(f"{module}:{node.lineno} uses threading.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "threading":
                bad = {a.name for a in node.names} - SYNC_PRIMITIVES
                if bad:
                    problems.append(f"{module}:{node.lineno} imports {sorted(bad)} from threading")
    assert problems == []


def test_transports_never_import_the_bus_or_dispatch() -> None:
    """_transports/* import neither _bus, _dispatch, _batch, _subscription nor the package."""
    transports = {name for name in MODULES if name.startswith("eventbus._transports")}
    assert {"eventbus._transports.memory", "eventbus._transports.redis"} <= transports
    problems = list(_violations(transports, DISPATCH))
    for module in sorted(transports):
        problems += [
            f"{module}:{imp.line} imports the public package"
            for imp in _imports(MODULES[module])
            if imp.module == "eventbus"
        ]
    assert problems == []


def test_only_the_redis_transport_imports_redis_at_module_level() -> None:
    """Only the Redis transport's modules import redis when they are imported."""
    importers = {
        name
        for name, path in MODULES.items()
        for imp in _imports(path)
        if imp.top_level and _within(imp.module, {"redis"})
    }
    importers = {name for name in importers if not _within(name, {"eventbus.gateway"})}
    assert importers == {
        "eventbus._transports.redis",
        "eventbus._transports.redis_streams",
        "eventbus._transports.redis_compat",
    }


def test_only_the_gateway_and_its_transport_import_socketio_at_module_level() -> None:
    """socketio is imported at module level only by the gateway server package and the
    http(s):// transport, each imported lazily itself (see the `import eventbus` test)."""
    importers = sorted(
        name
        for name, path in MODULES.items()
        for imp in _imports(path)
        if imp.top_level and _within(imp.module, {"socketio", "engineio"})
    )
    assert "eventbus._transports.gateway" in importers
    assert [
        name
        for name in importers
        if not _within(name, {"eventbus.gateway", "eventbus._transports.gateway"})
    ] == []


def test_bus_layer_never_imports_the_layer_above() -> None:
    """_bus, _dispatch and friends never import the public package, cli or _demo."""
    problems = list(_violations(DISPATCH | CORE, TOP))
    problems += [
        f"{module}:{imp.line} imports the public package"
        for module in sorted(DISPATCH)
        for imp in _imports(MODULES[module])
        if imp.module == "eventbus"
    ]
    assert problems == []


@pytest.mark.parametrize("module", sorted(TOP))
def test_cli_and_demo_use_only_the_public_package_and_stdlib(module: str) -> None:
    """cli, __main__ and _demo import only `eventbus` (never eventbus._x), stdlib, attrs."""
    if module not in MODULES:
        pytest.skip(f"{module} does not exist yet")
    problems = []
    for imp in _imports(MODULES[module]):
        top = imp.module.split(".")[0]
        if top == "eventbus":
            private = [part for part in imp.module.split(".")[1:] if part.startswith("_")]
            if private and not _within(imp.module, TOP):
                problems.append(f"{module}:{imp.line} imports {imp.module}")
        elif top not in sys.stdlib_module_names and top != "attrs":
            problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


def test_importing_eventbus_does_not_import_redis_or_socketio() -> None:
    """`import eventbus` in a fresh interpreter loads neither redis nor socketio."""
    code = (
        "import sys, eventbus; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('redis', 'socketio')); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PACKAGE_DIR.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _package_modules(package: str) -> list[str]:
    return sorted(name for name in MODULES if _within(name, {package}))


def test_integrations_use_the_public_package_and_their_framework_only() -> None:
    """contrib.* import `eventbus` (public), the layer built on it (_worker), their own
    package, the stdlib, attrs, and their own framework: never a private bus module,
    redis, or another integration's framework."""
    modules = _package_modules("eventbus.contrib")
    assert {"eventbus.contrib.flask", "eventbus.contrib.celery"} <= set(modules)
    problems = []
    for module in modules:
        framework = next(
            (deps for name, deps in CONTRIB_FRAMEWORKS.items() if _within(module, {name})),
            set(),
        )
        for imp in _imports(MODULES[module]):
            top = imp.module.split(".")[0]
            if top == "eventbus":
                private = [p for p in imp.module.split(".")[1:] if p.startswith("_")]
                own = _within(imp.module, {module.rpartition(".")[0] or module, module})
                if private and not _within(imp.module, TOP) and not own:
                    problems.append(f"{module}:{imp.line} imports {imp.module}")
            elif top in sys.stdlib_module_names or top == "attrs":
                continue
            elif top not in framework:
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


def test_the_testing_kit_needs_no_server() -> None:
    """testing.* import the public package, the pure core and their own modules, the
    stdlib, attrs and pytest: no transport, no redis, no thread pool of the bus."""
    modules = _package_modules("eventbus.testing")
    assert "eventbus.testing.pytest_plugin" in modules
    problems = []
    for module in modules:
        for imp in _imports(MODULES[module]):
            top = imp.module.split(".")[0]
            if top == "eventbus":
                allowed = {"eventbus.testing", *CORE}
                if imp.module != "eventbus" and not _within(imp.module, allowed):
                    problems.append(f"{module}:{imp.line} imports {imp.module}")
            elif top not in sys.stdlib_module_names and top not in {"attrs", "pytest"}:
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


def test_importing_eventbus_or_its_testing_kit_loads_no_framework() -> None:
    """`import eventbus, eventbus.testing` loads no web framework, task queue or pytest."""
    code = (
        "import sys, eventbus, eventbus.testing; "
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FRAMEWORKS)!r}); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PACKAGE_DIR.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


GATEWAY_THIRD_PARTY = {
    "attrs",
    "socketio",
    "engineio",
    "uvicorn",
    "jwt",
    "redis",
    "websockets",
    "wsproto",
}


def test_the_gateway_server_builds_on_the_core_only() -> None:
    """gateway.* import the public package, their own package, the pure core, the stdlib
    and the server's libraries: never the bus, its dispatch, presence or transports,
    but for redis_compat, a leaf that imports only redis (how each redis-py release
    spells a setting, shared with the transport by the /service listener)."""
    modules = _package_modules("eventbus.gateway")
    compat = "eventbus._transports.redis_compat"
    assert [
        imp.module for imp in _imports(MODULES[compat]) if _within(imp.module, {"eventbus"})
    ] == []
    assert {"eventbus.gateway._app", "eventbus.gateway.services"} <= set(modules)
    problems = []
    for module in modules:
        for imp in _imports(MODULES[module]):
            top = imp.module.split(".")[0]
            if top == "eventbus":
                allowed = {"eventbus.gateway", compat, *CORE}
                if imp.module != "eventbus" and not _within(imp.module, allowed):
                    problems.append(f"{module}:{imp.line} imports {imp.module}")
            elif top not in sys.stdlib_module_names and top not in GATEWAY_THIRD_PARTY:
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []
