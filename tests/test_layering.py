"""The package's floors: lower layers never import higher ones, and no import circles.

Every import in every module of darknet_py (at module level or inside a function: a lazy
import is still a dependency) is read with ast. Floors, lowest first: the layers and the
pure maths (layers/ with the detection deltas, activations, box, cfg/, outputs/, image,
...), network, data/ and eval/, train/, cli and compat at the top. Nothing below train/ imports train/, and
train/ does not import cli.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "darknet_py"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("darknet_py"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("darknet_py"):
                # `from . import x` may name a submodule: then that is the dependency
                subs = {f"{target}.{a.name}" for a in node.names} & MODULES
                out |= subs or {target}
    return {i for i in out if i != mod}


MODULES = {_module(p) for p in PKG.rglob("*.py")}
TOP = {"darknet_py", "darknet_py.cli", "darknet_py.__main__", "darknet_py.compat"}  # the command line, upstream's module surface
GRAPH = {_module(p): {i for i in _imports(p) if i in MODULES} for p in PKG.rglob("*.py")}


def test_nothing_below_train_imports_it():
    for mod, deps in GRAPH.items():
        if mod.startswith("darknet_py.train") or mod in TOP:
            continue
        bad = sorted(d for d in deps if d.startswith("darknet_py.train") or d == "darknet_py.cli")
        assert not bad, f"{mod} imports {bad}"


def test_train_does_not_import_the_command_line():
    for mod, deps in GRAPH.items():
        if mod.startswith("darknet_py.train"):
            assert "darknet_py.cli" not in deps, f"{mod} imports darknet_py.cli"


def test_no_import_circles():
    # a package's __init__ re-exporting its submodules is not a circle of code
    graph = {m: {d for d in deps if not (m.startswith(d + ".") and d != "darknet_py")}
             for m, deps in GRAPH.items()}
    graph = {m: {d for d in deps if d != "darknet_py"} for m, deps in graph.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
