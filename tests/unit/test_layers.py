"""The layer contract: imports flow one way, from the CLI down to the core, and no module imports itself back.

Every `import` in planner/ is read from the source (module level and inside functions alike), so a lazy import
cannot hide a cycle. docs/architecture.md draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "planner"

LAYERS = (
    "planner.core",  # errors, units, input parsing, percentiles
    "planner.catalog",  # catalog files, model families, engine support
    "planner.spec",  # what the user asks for: model, serving config, workload, request shape, SLOs
    "planner.perf",  # memory and step times (roofline, kernel profiles)
    "planner.load",  # queueing: analytic model and simulator
    "planner.estimate",  # one configuration under one workload
    "planner.solver",  # the search
    "planner.plan",  # the plan file
    "planner.emit",  # launch configs
    "planner.calibrate",  # fitting and device measurement
    "planner.app",  # commands as library calls: solve/estimate requests, whatif, reports, plots
    "planner.cli",  # parse, call, print
)


def _layer(module: str) -> int:
    for i, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # `from planner.app import report` imports a module
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in found if m.startswith("planner.") and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: {m for m in _imports(name, path, known) if m in known} for name, path in mods.items()}


def test_every_module_is_in_a_layer() -> None:
    for name in _modules():
        if name != "planner":
            _layer(name)


def test_imports_flow_down_the_layers() -> None:
    upward = [f"{a} imports {b}" for a, deps in _graph().items() if a != "planner" for b in deps
              if _layer(b) > _layer(a)]
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            # A package's __init__ re-exporting its own submodules is not a cycle of ideas; skip parent->child.
            if dep.startswith(node + "."):
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]) if dep in stack else f"{node} -> {dep}")
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_contract_would_catch_an_upward_import(tmp_path: Path) -> None:
    # The checker itself: a core module importing the solver is reported.
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from planner.solver import solve\n")
    assert _imports("planner.core.m", fake, {"planner.solver"}) == {"planner.solver"}
    assert _layer("planner.solver") > _layer("planner.core.m")


def test_modules_and_functions_stay_small() -> None:
    """Issue 14's house rule: no module over 500 lines and no function over 80 outside the device scripts (which
    run alone on a GPU machine)."""
    long: list[str] = []
    for name, path in sorted(_modules().items()):
        if name.startswith("planner.calibrate.device"):
            continue
        src = path.read_text()
        if src.count("\n") > 500:
            long.append(f"{name}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 80:
                    long.append(f"{name}.{node.name}: {n} lines")
    assert not long, "\n".join(long)
