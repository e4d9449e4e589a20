"""The project's import structure, read from the source with ``ast`` (nothing is imported).

Used by tests/test_architecture.py to hold three rules (docs/architecture.md, "Style rules the tests hold"):

* **No import circles.** Every import statement counts, wherever it stands: at module level,
  inside a function (a deferred import is still a dependency, it only moves the failure to
  run time) and under ``if TYPE_CHECKING:`` (a type-only import still ties the two modules
  together for every reader and type checker). A module that needs a name only for a type
  hint takes a Protocol or the fields it uses instead.
* **Small modules.** No module over :data:`MAX_LINES` lines: past that a module starts to hold
  a second concept and becomes a package.
* **No private name across modules.** ``from m import _name`` and ``m._name`` (``m`` an
  imported project module) reach into another module's internals; a name another module
  needs is public.

An edge A → B means module A imports module B: ``import a.b`` and ``from a import b`` (when
``a/b.py`` or ``a/b/`` exists) point at ``a.b``; ``from a.b import name`` points at ``a.b``.
Importing a submodule also runs its packages' ``__init__``; those implicit edges are not
counted (every package's ``__init__`` would otherwise sit in a circle with the modules it
re-exports), so keep ``__init__`` modules free of imports that lead back into their modules.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

#: Longest module allowed, in lines.
MAX_LINES = 500


@dataclass(frozen=True)
class Module:
    name: str          # dotted name, "app.view.picking"
    path: Path
    is_package: bool   # an __init__.py


def project_modules(root: Path, packages: tuple[str, ...], files: tuple[str, ...] = ()) -> dict[str, Module]:
    """Every module of the ``packages`` (directories under ``root``) and the top-level ``files``."""
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    for name in files:
        path = root / name
        modules[path.stem] = Module(path.stem, path, False)
    return modules


def _resolve_from(module: Module, node: ast.ImportFrom) -> str:
    """The absolute dotted name ``from X import ...`` names as X (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: Module, modules: dict[str, Module]) -> list[tuple[int, str, str | None]]:
    """(line, imported project module, private name or None) for every import of ``module``."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    found: list[tuple[int, str, str | None]] = []
    bound: dict[str, str] = {}      # local name → project module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append((node.lineno, alias.name, None))
                    bound[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    found.append((node.lineno, sub, alias.name if _private(alias.name) else None))
                    bound[alias.asname or alias.name] = sub
                elif source in modules:
                    found.append((node.lineno, source, alias.name if _private(alias.name) else None))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            target = _dotted(node.value)
            if target in bound:
                found.append((node.lineno, bound[target], node.attr))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` of a Name/Attribute chain, None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Module → the project modules it imports (self-imports left out)."""
    return {name: {target for _, target, _ in _imports(m, modules) if target != name}
            for name, m in modules.items()}


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Every group of modules that import one another in a circle (strongly connected
    components of more than one module, Tarjan's algorithm), each sorted."""
    graph = import_graph(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative Tarjan: (node, iterator over its successors) frames instead of recursion.
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        frames = [(start, iter(sorted(graph[start])))]
        while frames:
            node, successors = frames[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    frames.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            frames.pop()
            if frames:
                parent = frames[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(cycles)


def long_modules(modules: dict[str, Module], limit: int = MAX_LINES) -> dict[str, int]:
    """Modules over ``limit`` lines, with their line counts."""
    counts = {name: len(m.path.read_text(encoding="utf-8").splitlines()) for name, m in modules.items()}
    return {name: n for name, n in counts.items() if n > limit}


def private_imports(modules: dict[str, Module]) -> list[str]:
    """"module:line imports _name from other" for every private name taken from another module."""
    return [f"{name}:{line} takes {private} from {target}"
            for name, m in sorted(modules.items())
            for line, target, private in _imports(m, modules)
            if private is not None and target != name]


#: The app's layers, lowest first: a module may import its own layer's modules and lower layers'
#: only. Views, panels and sources sit side by side below the window: a panel never reaches
#: into the window that hosts it, nor into the 3D view; the window composes them all.
APP_LAYERS: tuple[tuple[str, ...], ...] = (
    ("app.snapshot", "app.colormaps"),
    ("app.sources",),
    ("app.view", "app.panels"),
    ("app.window",),
    ("app.main",),
)


def _layer(name: str, layers: tuple[tuple[str, ...], ...]) -> tuple[int, str] | None:
    """(layer index, the prefix that placed it) of module ``name``, None outside the layers."""
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return i, prefix
    return None


def layer_violations(modules: dict[str, Module], layers: tuple[tuple[str, ...], ...] = APP_LAYERS) -> list[str]:
    """"module:line imports target" for every import upward, or sideways into a sibling of its layer."""
    found = []
    for name, m in sorted(modules.items()):
        own = _layer(name, layers)
        if own is None:
            continue
        for line, target, _ in _imports(m, modules):
            theirs = _layer(target, layers)
            if theirs is None:
                continue
            if theirs[0] > own[0] or (theirs[0] == own[0] and theirs[1] != own[1]):
                found.append(f"{name}:{line} imports {target}")
    return found


def attribute_reads(modules: dict[str, Module], prefix: str, owner: str, attributes: tuple[str, ...]) -> list[str]:
    """"module:line reads X.attr" wherever a module under ``prefix`` reads ``attr`` of something
    whose dotted name ends in ``owner`` (e.g. ``self.worker.trainer``, ``window.worker.dataset``)."""
    found = []
    for name, m in sorted(modules.items()):
        if not (name == prefix or name.startswith(prefix + ".")):
            continue
        tree = ast.parse(m.path.read_text(encoding="utf-8"), filename=str(m.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in attributes:
                head = _dotted(node.value)
                if head is not None and head.split(".")[-1] == owner:
                    found.append(f"{name}:{node.lineno} reads {head}.{node.attr}")
    return found
