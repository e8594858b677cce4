"""The layering of the package, checked by reading every module's imports with ``ast``.

Each layer is a folder (or one module); a layer imports only from itself and the layers
it is listed with in ``MAY_IMPORT``. From the bottom up::

    types and errors   eventbus._errors, eventbus._models
    pure logic         eventbus._core.*
    I/O                eventbus._transports.*
    runtime            eventbus._runtime.*       the bus, dispatch, groups
    public package     eventbus                  (eventbus/__init__.py)
    built on it        eventbus.cli.*, eventbus.testing.*, eventbus.gateway.*
    integrations       eventbus.contrib.*

Two rules hold for the whole package, whatever the layer: **no import cycles** (lazy
imports and imports under ``TYPE_CHECKING`` count too), and **no module imports another
module's private names** (``from m import _x`` or ``m._x``). The layer map and where new
code goes is in ``docs/contributing.md``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs
import pytest

import eventbus

PACKAGE_DIR = Path(eventbus.__file__).parent

TYPES = {"eventbus._errors", "eventbus._models"}
CORE = "eventbus._core"
TRANSPORTS = "eventbus._transports"
RUNTIME = "eventbus._runtime"
PUBLIC = "eventbus"  # the package's __init__ only
REDIS_LEAVES = {"eventbus._transports.redis.compat", "eventbus._transports.redis.lua"}

# What each layer (a prefix) may import from eventbus, besides itself. `PUBLIC` matches
# only `eventbus` (the __init__), never its submodules.
MAY_IMPORT: dict[str, set[str]] = {
    "eventbus._errors": set(),
    "eventbus._models": {"eventbus._errors"},
    CORE: TYPES,
    TRANSPORTS: TYPES | {CORE},
    RUNTIME: TYPES | {CORE, TRANSPORTS},
    PUBLIC: TYPES | {CORE, RUNTIME},
    "eventbus.__main__": {"eventbus.cli"},
    # The documented import path of the worker loop (docs/worker.md), kept as it was.
    "eventbus._worker": {"eventbus.cli._worker"},
    # The CLI is a client of the public API: `eventbus`, its own package, and the
    # gateway's public functions (imported lazily: they need the extra).
    "eventbus.cli": {PUBLIC, "eventbus.gateway"},
    # The testing kit is the real bus over a recording transport: it builds on the
    # runtime and the in-process transport, never on Redis or the gateway.
    "eventbus.testing": TYPES
    | {PUBLIC, CORE, RUNTIME, "eventbus._transports.base", "eventbus._transports.memory"},
    # The gateway server shares the pure core and two leaves of the Redis transport (how
    # each redis-py release spells a setting; the presence scripts); never the bus.
    "eventbus.gateway": TYPES | {CORE} | REDIS_LEAVES,
    # Integrations use the public package, the worker loop and the testing kit's
    # RecordingBus (as a bus class setting); and two pure values of the core, to check
    # a handler's options or an event before any bus exists (Flask's and Django's
    # handlers declared at import, Django's publish_on_commit), by the bus's own rules.
    "eventbus.contrib": {
        PUBLIC,
        "eventbus.cli._worker",
        "eventbus.cli._common",
        "eventbus.testing",
        "eventbus._core.options",
        "eventbus._core.outgoing",
    },
}

# Each integration may import its framework (and what that framework is built on).
CONTRIB_FRAMEWORKS = {
    "eventbus.contrib.flask": {"flask", "werkzeug", "click"},
    "eventbus.contrib.django": {"django"},
    "eventbus.contrib.celery": {"celery", "kombu"},
}
FRAMEWORKS = {"flask", "werkzeug", "click", "django", "celery", "kombu", "pytest"}

# Third-party packages the pure core may use: attrs everywhere, tenacity only in retry
# (tenacity stays behind one private module).
CORE_THIRD_PARTY = {"attrs": {CORE, *TYPES}, "tenacity": {"eventbus._core.retry"}}
# The rule encoded for threads: the pure core starts none. `threading` is imported only
# by stats (a Lock around counters), envelope (a Lock around ULID monotonicity), retry
# and backoff (threading.Event, the shutdown signal their sleeps wait on), and only for
# these synchronisation primitives, never Thread or Timer.
THREADING_ALLOWED = {
    "eventbus._core.stats",
    "eventbus._core.envelope",
    "eventbus._core.retry",
    "eventbus._core.backoff",
}
SYNC_PRIMITIVES = {"Lock", "RLock", "Event", "Condition", "Semaphore", "BoundedSemaphore"}
# No I/O or concurrency machinery in the pure core; nor logging: it raises, and
# reporting is the runtime's job.
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
    type_checking: bool  # under `if TYPE_CHECKING:`


def module_map(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name."""

    def name(path: Path) -> str:
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    return {name(path): path for path in sorted(root.rglob("*.py"))}


MODULES = module_map(PACKAGE_DIR)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, modules: Mapping[str, Path]) -> list[Import]:
    """Every import in ``module``, resolved to absolute names."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.body:
                    visit(ast.Module(body=[other], type_ignores=[]), top_level, True)
                for other in child.orelse:
                    visit(ast.Module(body=[other], type_ignores=[]), top_level, type_checking)
                continue
            if isinstance(child, ast.Import):
                found.extend(
                    Import(alias.name, (), child.lineno, top_level, type_checking)
                    for alias in child.names
                )
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                names = tuple(alias.name for alias in child.names)
                found.append(Import(base, names, child.lineno, top_level, type_checking))
                # `from eventbus.cli import _worker` imports the module eventbus.cli._worker.
                found.extend(
                    Import(f"{base}.{name}", (), child.lineno, top_level, type_checking)
                    for name in names
                    if f"{base}.{name}" in modules
                )
            nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            visit(child, top_level and not nested, type_checking)

    visit(tree, True, False)
    return found


def _imports(module: str) -> list[Import]:
    """Imports that run (not those under TYPE_CHECKING), for the layer rules."""
    return [imp for imp in imports_of(module, MODULES) if not imp.type_checking]


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> str:
    """The longest prefix of MAY_IMPORT that holds ``module`` (`eventbus` only itself)."""
    found = [
        prefix
        for prefix in MAY_IMPORT
        if (module == prefix) or (prefix != PUBLIC and _within(module, {prefix}))
    ]
    assert found, f"{module} is in no layer: place it in MAY_IMPORT in tests/test_layers.py"
    return max(found, key=len)


def _allowed(layer: str, target: str) -> bool:
    if _within(target, {layer}) and layer != PUBLIC:
        return True
    return any(
        target == allowed if allowed == PUBLIC else _within(target, {allowed})
        for allowed in MAY_IMPORT[layer]
    )


# -- the two package-wide rules, as functions a test can run on a made-up package ------


def import_graph(modules: Mapping[str, Path], package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import: lazy, TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    for module in modules:
        targets = {
            imp.module
            for imp in imports_of(module, modules)
            if imp.module in modules and imp.module != module
        }
        graph[module] = {t for t in targets if _within(t, {package})}
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def private_imports(modules: Mapping[str, Path], package: str) -> Iterator[str]:
    """Each place a module takes another module's private name (``_x``, not ``__x__``)."""

    def private(name: str) -> bool:
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for module, path in modules.items():
        aliases: dict[str, str] = {}
        for imp in imports_of(module, modules):
            if not _within(imp.module, {package}) or imp.module == module:
                continue
            for name in imp.names:
                if private(name) and f"{imp.module}.{name}" not in modules:
                    yield f"{module}:{imp.line} imports {name} from {imp.module}"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname and alias.name in modules:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    if target in modules and target != module:
                        aliases[alias.asname or alias.name] = target
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and private(node.attr)
            ):
                yield f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}"


def test_the_package_has_no_import_cycles() -> None:
    """No two modules of eventbus import each other, directly or around a circle."""
    assert cycles(import_graph(MODULES, "eventbus")) == []


def test_no_module_imports_another_modules_private_names() -> None:
    """What one module shares with another has a public name (in a private module)."""
    assert list(private_imports(MODULES, "eventbus")) == []


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return module_map(root / "pkg")


def test_the_cycle_rule_finds_a_deliberate_cycle(tmp_path: Path) -> None:
    """A made-up package whose a -> b -> c -> a circle closes only lazily and under
    TYPE_CHECKING is reported; the same package without the back edge is not."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import B\n",
        "pkg/b.py": "def f():\n    from pkg import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
        "pkg/d.py": "import pkg.a\n",
    }
    modules = _write(tmp_path, files)
    assert cycles(import_graph(modules, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]
    (tmp_path / "pkg/c.py").write_text("X = 1\n", encoding="utf-8")
    assert cycles(import_graph(modules, "pkg")) == []


def test_the_private_name_rule_finds_deliberate_private_imports(tmp_path: Path) -> None:
    """`from m import _x`, `import m as alias; alias._x` and `from p import m; m._x` are
    reported; private modules, dunders and a module's own names are not."""
    files = {
        "pkg/__init__.py": "__version__ = '1'\n",
        "pkg/_impl.py": "PUBLIC = 1\n_hidden = 2\n",
        "pkg/good.py": (
            "from pkg._impl import PUBLIC\nfrom pkg import _impl, __version__\n"
            "_mine = _impl.PUBLIC\n"
        ),
        "pkg/bad.py": (
            "from pkg._impl import _hidden\nimport pkg._impl as impl\nfrom pkg import _impl\n"
            "x = impl._hidden\ny = _impl._hidden\n"
        ),
    }
    found = list(private_imports(_write(tmp_path, files), "pkg"))
    assert found == [
        "pkg.bad:1 imports _hidden from pkg._impl",
        "pkg.bad:4 uses pkg._impl._hidden",
        "pkg.bad:5 uses pkg._impl._hidden",
    ]


# -- the layers -------------------------------------------------------------------------


def test_every_module_has_a_layer() -> None:
    """Each module of eventbus falls in a layer of MAY_IMPORT (add new folders there)."""
    for module in MODULES:
        _layer(module)
    assert _layer("eventbus._core.patterns") == CORE
    assert _layer("eventbus") == PUBLIC
    assert _layer("eventbus.cli._worker") == "eventbus.cli"


def test_the_import_reader_sees_real_imports() -> None:
    """The checker finds the bus's imports (so the rules below are not vacuous)."""
    found = {imp.module for imp in _imports("eventbus._runtime.bus")}
    assert {"eventbus._runtime.dispatch", "eventbus._transports", "threading"} <= found
    lazy = [imp for imp in _imports("eventbus._transports") if not imp.top_level]
    assert "eventbus._transports.redis.transport" in {imp.module for imp in lazy}


def test_each_layer_imports_only_itself_and_the_layers_below() -> None:
    """Every runtime import of an eventbus module is allowed by MAY_IMPORT."""
    problems = []
    for module in MODULES:
        layer = _layer(module)
        for imp in _imports(module):
            if _within(imp.module, {"eventbus"}) and not _allowed(layer, imp.module):
                problems.append(f"{module}:{imp.line} ({layer}) imports {imp.module}")
    assert problems == []


def test_the_layer_rule_is_not_vacuous() -> None:
    """The rule refuses what it must: the core importing the runtime, the runtime the
    package, a transport the bus, the gateway the runtime, the CLI a private module."""
    assert not _allowed(CORE, "eventbus._runtime.bus")
    assert not _allowed(RUNTIME, "eventbus")
    assert not _allowed(TRANSPORTS, "eventbus._runtime.dispatch")
    assert not _allowed("eventbus.gateway", "eventbus._runtime.bus")
    assert not _allowed("eventbus.gateway", "eventbus._transports.redis.transport")
    assert not _allowed("eventbus.cli", "eventbus._core.patterns")
    assert not _allowed("eventbus.testing", "eventbus._transports.redis.transport")
    assert _allowed("eventbus.cli", "eventbus")
    assert _allowed(RUNTIME, "eventbus._core.patterns")


def test_pure_core_imports_only_the_core_stdlib_and_attrs() -> None:
    """The pure core never imports redis, socketio, logging or I/O machinery."""
    problems = []
    for module in sorted(m for m in MODULES if _within(m, {CORE, *TYPES})):
        for imp in _imports(module):
            top = imp.module.split(".")[0]
            if top == "eventbus":
                continue  # the layer rule above
            if top in sys.stdlib_module_names:
                if _within(imp.module, CORE_FORBIDDEN_STDLIB):
                    problems.append(f"{module}:{imp.line} imports {imp.module} (I/O)")
            elif not _within(module, CORE_THIRD_PARTY.get(top, set())):
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


def test_pure_core_starts_no_threads() -> None:
    """Only stats, envelope, retry and backoff import threading, and use only locks and
    events."""
    problems = []
    for module in sorted(m for m in MODULES if _within(m, {CORE})):
        path = MODULES[module]
        uses_threading = any(_within(imp.module, {"threading"}) for imp in _imports(module))
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


def test_only_the_redis_transport_imports_redis_at_module_level() -> None:
    """Outside the gateway server, only the Redis transport's modules import redis when
    they are imported."""
    importers = {
        name
        for name in MODULES
        for imp in _imports(name)
        if imp.top_level and _within(imp.module, {"redis"})
    }
    outside = {name for name in importers if not _within(name, {"eventbus.gateway"})}
    assert outside
    assert all(_within(name, {"eventbus._transports.redis"}) for name in outside), outside


def test_only_the_gateway_and_its_transport_import_socketio_at_module_level() -> None:
    """socketio is imported at module level only by the gateway server package and the
    http(s):// transport, each imported lazily itself (see the `import eventbus` test)."""
    importers = sorted(
        name
        for name in MODULES
        for imp in _imports(name)
        if imp.top_level and _within(imp.module, {"socketio", "engineio"})
    )
    assert any(_within(name, {"eventbus._transports.gateway"}) for name in importers)
    assert [
        name
        for name in importers
        if not _within(name, {"eventbus.gateway", "eventbus._transports.gateway"})
    ] == []


def test_the_gateways_redis_leaves_import_nothing_of_eventbus() -> None:
    """The two Redis modules the gateway shares are leaves: they import redis or nothing."""
    for leaf in REDIS_LEAVES:
        assert [imp.module for imp in _imports(leaf) if _within(imp.module, {"eventbus"})] == []


def test_the_cli_uses_only_the_stdlib_and_attrs() -> None:
    """cli.* and __main__ need no third-party package but attrs (argparse, no click)."""
    problems = []
    for module in sorted(m for m in MODULES if _within(m, {"eventbus.cli", "eventbus.__main__"})):
        for imp in _imports(module):
            top = imp.module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in {"eventbus", "attrs"}:
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


def test_integrations_import_only_their_own_framework() -> None:
    """contrib.* import the stdlib, attrs and their own framework: never redis or another
    integration's framework."""
    modules = sorted(m for m in MODULES if _within(m, {"eventbus.contrib"}))
    assert {"eventbus.contrib.flask", "eventbus.contrib.celery"} <= set(modules)
    problems = []
    for module in modules:
        framework = next(
            (deps for name, deps in CONTRIB_FRAMEWORKS.items() if _within(module, {name})),
            set(),
        )
        for imp in _imports(module):
            top = imp.module.split(".")[0]
            if top in sys.stdlib_module_names or top in {"attrs", "eventbus"}:
                continue
            if top not in framework:
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


def test_the_testing_kit_needs_no_server() -> None:
    """testing.* import the stdlib, attrs and pytest (the plugin): no redis, no socketio."""
    problems = []
    for module in sorted(m for m in MODULES if _within(m, {"eventbus.testing"})):
        for imp in _imports(module):
            top = imp.module.split(".")[0]
            if top not in sys.stdlib_module_names and top not in {"attrs", "pytest", "eventbus"}:
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


def test_the_gateway_server_uses_only_its_own_libraries() -> None:
    """gateway.* import the stdlib and the server's libraries (socketio, uvicorn, jwt,
    redis, ...), nothing else third-party."""
    problems = []
    for module in sorted(m for m in MODULES if _within(m, {"eventbus.gateway"})):
        for imp in _imports(module):
            top = imp.module.split(".")[0]
            if top in sys.stdlib_module_names or top == "eventbus":
                continue
            if top not in GATEWAY_THIRD_PARTY:
                problems.append(f"{module}:{imp.line} imports third-party {imp.module}")
    assert problems == []


@pytest.mark.parametrize("module", ["eventbus._core", "eventbus._runtime", "eventbus.cli"])
def test_each_layer_folder_says_what_it_holds(module: str) -> None:
    """A layer's folder opens with a docstring (the map in docs/contributing.md links them)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    assert ast.get_docstring(tree)
