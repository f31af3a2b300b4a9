"""The package's layering, checked on the source (no imports run): every import inside
``ikd_cli`` points down the stack of stages, and no module imports itself back in a circle.

    core < config, zoo < data < attack < train < distill < evaluate < report, backdoor < api < cli

A module may import its own package and any package listed before it (on the same line counts
as before for ``config`` and ``zoo``, which never import each other). Imports inside functions
count too: hiding an upward import in a function is still an upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ikd_cli"
LAYERS = {"core": 0, "config": 1, "zoo": 1, "data": 2, "attack": 3, "train": 4, "distill": 5,
          "evaluate": 6, "report": 7, "backdoor": 7, "api": 8, "cli": 9}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``ikd_cli`` module a file imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ikd_cli"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ikd_cli"):
                continue
            found.add(target)
            # ``from ikd_cli.x import y`` may name a submodule y
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file() or \
                        (PACKAGE.parent / Path(*candidate.split("."))).is_dir():
                    found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports_of(path) if t in modules and t != name} for name, path in modules.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"give {packages - set(LAYERS)} a place in LAYERS (and docs/extending.md's layout)"


def test_imports_point_down():
    upward = []
    for module, targets in graph().items():
        here = stage(module)
        for target in targets:
            there = stage(target)
            if here is None or there is None or here == there:
                continue
            if LAYERS[there] > LAYERS[here] or (LAYERS[there] == LAYERS[here]):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up (or sideways): " + ", ".join(sorted(upward))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(edges):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_can_fail():
    """The cycle finder finds a planted cycle, and an upward edge is seen as one."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert LAYERS[stage("ikd_cli.distill.run")] > LAYERS[stage("ikd_cli.attack.batch")]


def test_scripts_import_what_exists():
    """The scripts (benchmarks) import ikd_cli names inside functions, where a rename in the
    package would only show when someone runs them: every `from ikd_cli.x import y` must resolve."""
    import ast
    import importlib
    import importlib.util

    missing = []
    for script in sorted((PACKAGE.parent / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ikd_cli"):
                module = importlib.import_module(node.module)
                # a submodule (`from ikd_cli.config import presets`) is an attribute only once imported
                missing += [f"{script.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                            and not (hasattr(module, "__path__")
                                     and importlib.util.find_spec(f"{node.module}.{a.name}") is not None)]
    assert not missing, "scripts import names that do not exist: " + ", ".join(missing)
