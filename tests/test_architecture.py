"""The layout is the architecture: each layer of ``anytalker_core`` imports only the layers below it, the core
never imports the nodes, and no module of the pack imports another in a cycle (lazy imports inside functions
count too: a cycle that only closes at run time is still a knot for the reader)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Layer of each part of the core, lowest first. A module may import its own layer and the layers below it.
LAYERS = {
    "timeline": 0, "images": 0, "weights": 0, "sizes": 0,
    "model": 1, "people": 1, "encoders": 1, "sampling": 1,
    "pipeline": 2, "judge": 2,
    "demo": 3, "cli": 3, "batch": 3, "__main__": 4, "__init__": 4,
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports(path: Path) -> set[str]:
    """The pack's modules that ``path`` imports (relative imports resolved; ``from . import x`` gives the module
    ``x`` when it is one)."""
    name = module_name(path)
    package = name if is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in ALL else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in ALL}


FILES = [p for d in ("anytalker_core", "nodes") for p in (REPO / d).rglob("*.py")]
ALL = {module_name(p) for p in FILES}
GRAPH = {module_name(p): imports(p) for p in FILES}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_core_module_has_a_layer():
    core = [m for m in ALL if m.startswith("anytalker_core")]
    assert all((m.split(".") + ["__init__"])[1] in LAYERS for m in core), sorted(core)


def test_core_layers_import_only_downwards():
    wrong = []
    for module, targets in GRAPH.items():
        if not module.startswith("anytalker_core"):
            continue
        for target in targets:
            if target.startswith("nodes") or layer(target) > layer(module):
                wrong.append(f"{module} -> {target}")
            if layer(target) == layer(module) == 1 and target.split(".")[1] != module.split(".")[1]:
                wrong.append(f"{module} -> {target} (a sibling layer)")
    assert not wrong, wrong


def test_no_import_cycles():
    def package_of(module: str) -> str | None:
        return module.rpartition(".")[0] or None

    # A package's __init__ re-exporting its own modules is not a cycle of the design: leave those edges out.
    edges = {m: {t for t in ts if not (package_of(t) == m)} for m, ts in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = 2
        stack.pop()
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            raise AssertionError(" -> ".join(cycle))
