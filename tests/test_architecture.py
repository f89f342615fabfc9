"""The one-way data flow of docs/ARCHITECTURE.md, checked on the import statements of lib."""
import ast
import sys
from collections import defaultdict
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
# Each layer may import only from earlier layers (docs/ARCHITECTURE.md, "The one-way data flow").
# Command-line entry points (``cli*.py``) sit on top of everything and are not checked.
LAYERS = [["plugins"], ["utils"], ["datasets"], ["config"], ["tasks"], ["data", "models"], ["losses", "masks"],
          ["checkpoints", "metrics_minmax"], ["metrics"], ["pruning", "training", "export"],
          ["reports", "sparse"], ["cli_args"], ["experiments", "workspace", "explorer", "cli"],
          ["__main__"]]


def imports_between_parts():
    """``{part: {parts it imports}}`` where a part is a top-level module or package of lib."""
    edges = defaultdict(set)
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB).with_suffix("").parts
        if len(parts) > 1 and parts[-1].startswith("cli"):
            continue
        own = parts[0]
        package = list(parts[:-1]) if path.name != "__init__.py" else list(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib."):
                target = node.module.split(".")[1:]
            elif isinstance(node, ast.Import) and node.names[0].name.startswith("lib."):
                target = node.names[0].name.split(".")[1:]
            else:
                continue
            if target and target[0] != own:
                edges[own].add(target[0])
    return edges


def test_every_part_of_lib_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in LIB.iterdir()
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts - {"__init__"} == {name for layer in LAYERS for name in layer}


def test_imports_only_go_to_earlier_layers():
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = sorted(f"lib.{a} imports lib.{b}" for a, targets in imports_between_parts().items()
                    for b in targets if level[b] >= level[a] and b != a)
    assert not upward, upward


def imports_between_files():
    """``{module: {modules it imports}}`` over every file of lib, from every import statement
    (at module level and inside functions alike: a deferred import is still a dependency).
    ``from package import name`` goes to the submodule ``name`` when there is one, else to the
    package's ``__init__``; the parent packages an import runs first are not counted (a package
    importing its own modules is how packages work, not a circle)."""
    modules = {}
    for path in LIB.rglob("*.py"):
        parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets |= {f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                            for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        edges[module] = {t for t in targets if t in modules and t != module}
    return edges


def import_circles(edges):
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                circles.append(sorted(component))

    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 10 * len(edges)))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(old_limit)
    return circles


def test_no_import_circle_between_files():
    assert not import_circles(imports_between_files())


def test_the_circle_check_finds_circles():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set()}) == []
    edges = imports_between_files()
    assert "lib.export.measure" in edges["lib.export.report"]     # relative, module level
    assert "lib.pruning.methods" in edges["lib.pruning.cut_variants"]
    assert "lib.pruning.cut_variants" in edges["lib.pruning"]     # from . import name
    assert "lib.export.report_int8" in edges["lib.export.report"]  # inside a function
